"""The operations page (/ops/, staff) and the Prometheus endpoint (/metrics)."""
from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from lesionsearch.ops import metrics, selectors

#: Seconds between two refreshes of the operations page.
REFRESH_SECONDS = 10


@require_GET
@login_required
def ops_page(request):
    """Workers, queues, jobs needing attention, models, indexes and disk, at a glance: for operators
    (staff with the permission to view workers, ``jobs.view_workerbeat``; superusers have it)."""
    if not may_operate(request.user):
        raise PermissionDenied("The operations page is for operators (staff who may view workers).")
    context = {
        "workers": selectors.workers(), "queues": selectors.queue_depths(),
        "jobs": selectors.jobs_needing_attention(), "models": selectors.model_versions(),
        "indexes": selectors.index_versions(), "disk": selectors.disk_usage(), "refresh": REFRESH_SECONDS,
    }
    return render(request, "ops/ops.html", context)


@require_GET
def metrics_view(request):
    """Prometheus text exposition: from loopback, or with ``Authorization: Bearer $METRICS_TOKEN``."""
    if not _may_scrape(request):
        return HttpResponse("Forbidden: /metrics answers loopback, or a request with the configured token.\n",
                            status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


def may_operate(user) -> bool:
    return user.is_active and user.is_staff and user.has_perm("jobs.view_workerbeat")


def _may_scrape(request) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    if "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META:
        return False  # relayed by a proxy on this host: the client is elsewhere
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
