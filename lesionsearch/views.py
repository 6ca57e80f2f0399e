"""Project-level views: health and protected media."""
from __future__ import annotations

import mimetypes
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import FileResponse, Http404, JsonResponse
from django.views.decorators.http import require_GET

from lesionsearch.celery import app as celery_app


@require_GET
def healthz(request):
    """Liveness of the web tier's dependencies: database and broker. 503 when either is down."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # report any database failure as unhealthy, never crash
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # same for the broker
        checks["broker"] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)


@login_required
@require_GET
def protected_media(request, path: str):
    """Serve media to signed-in users only; patient images are never public URLs.

    Finer rules (a reader must not fetch a study case's files outside the study) are enforced
    by the views that hand out these URLs; this view stops anonymous access and traversal.
    """
    root = Path(settings.MEDIA_ROOT).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise Http404("no such file")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    response = FileResponse(open(target, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response
