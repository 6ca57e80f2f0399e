from __future__ import annotations

from lesionsearch.audit.services import _current_request


class AuditContextMiddleware:
    """Makes the current request known to ``audit.services.record`` (IP, channel, signed-in user)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)
