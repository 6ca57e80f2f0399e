"""The per-user limit on query creation, shared by the API and the search page.

Both count against the same cache entry per user, so a clinician gets REST_FRAMEWORK
["DEFAULT_THROTTLE_RATES"]["query_submit"] queries in total, whichever way they submit them.
"""
from __future__ import annotations

import math

from rest_framework.throttling import UserRateThrottle


class QuerySubmitThrottle(UserRateThrottle):
    """Query creation per user (the rate is REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["query_submit"])."""

    scope = "query_submit"


def query_submit_wait(request) -> int | None:
    """Count a query submission of ``request.user``; None when allowed, else seconds to wait (>= 1)."""
    throttle = QuerySubmitThrottle()
    if throttle.allow_request(request, None):
        return None
    return max(1, math.ceil(throttle.wait() or 1))
