"""Project-level views: health and protected media."""
from __future__ import annotations

import mimetypes
from pathlib import Path

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import FileResponse, Http404, JsonResponse
from django.views.decorators.http import require_GET
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from lesionsearch.celery import app as celery_app
from retrieval.selectors import media_file_visible


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


def _media_user(request):
    """The session user, else the user of an ``Authorization: Token`` header (API integrators).

    Returns None when neither is given; raises AuthenticationFailed for a bad or inactive token.
    """
    if request.user.is_authenticated:
        return request.user
    credentials = TokenAuthentication().authenticate(request)
    return credentials[0] if credentials else None


@require_GET
def protected_media(request, path: str):
    """Serve media to signed-in users only; patient images are never public URLs.

    A session or an ``Authorization: Token`` header (as for the API) signs the user in. Files
    of a query (``queries/``: the upload and its overlay) are its owner's and staff's only;
    anyone else gets 404, as if the file did not exist. Finer rules for library images (a reader
    must not fetch a study case's files outside the study) are enforced by the views that hand
    out their URLs; this view stops anonymous access, other users' queries and traversal.
    """
    try:
        user = _media_user(request)
    except AuthenticationFailed as exc:
        response = JsonResponse({"error": {"status": 401, "code": "authentication_failed", "message": str(exc.detail)}},
                                status=401)
        response["WWW-Authenticate"] = TokenAuthentication().authenticate_header(request)
        return response
    if user is None:
        return redirect_to_login(request.get_full_path())
    root = Path(settings.MEDIA_ROOT).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise Http404("no such file")
    name = target.relative_to(root).as_posix()
    if not media_file_visible(user=user, name=name):
        raise Http404("no such file")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    response = FileResponse(open(target, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    # The same URL answers differently per user and credentials: shared caches must not reuse it.
    response["Vary"] = "Cookie, Authorization"
    return response


def bad_request(request, exception):
    """handler400: an unreadable request body gets a message saying why (413 when it is too large)."""
    from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
    from django.http.multipartparser import MultiPartParserError
    from django.shortcuts import render

    from lesionsearch.middleware import too_large_response

    if isinstance(exception, RequestDataTooBig):
        return too_large_response(request, "The form's fields are too large (files are not counted): at most "
                                           f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)} MB.")
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        message = "The form has too many fields or files."
    elif isinstance(exception, MultiPartParserError):  # e.g. no boundary, a file name over Django's header limit
        message = f"The uploaded form could not be read: {exception}"
    else:
        message = "The request could not be read."
    if request.path_info.startswith("/api/"):
        from retrieval.api.exceptions import error_body

        return JsonResponse(error_body(400, "invalid", message), status=400)
    return render(request, "400.html", {"message": message}, status=400)
