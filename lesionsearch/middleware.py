"""Request limits applied before any view (or the CSRF check) reads the body."""
from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render

#: Room for the multipart envelope and the other form fields around the largest accepted image.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def max_request_bytes() -> int:
    return settings.QUERY_MAX_UPLOAD_MB * 1024 * 1024 + MULTIPART_OVERHEAD_BYTES


def too_large_message() -> str:
    return f"The upload is larger than {settings.QUERY_MAX_UPLOAD_MB} MB. Please upload a smaller file."


def too_large_response(request, message: str):
    """413 with the message: the API's JSON error body under /api/, else a page."""
    if request.path_info.startswith("/api/"):
        from retrieval.api.exceptions import error_body

        return JsonResponse(error_body(413, "too_large", message), status=413)
    return render(request, "413.html", {"message": message}, status=413)


class RequestSizeLimitMiddleware:
    """413 for a request whose declared body is larger than the largest accepted upload.

    Django limits form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but not files: without this a 2 GB
    POST to any form would be read and spooled to disk (by the CSRF check, before the view) only
    to be refused afterwards. The largest legitimate body is one query image plus its form.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > max_request_bytes():
            return too_large_response(request, too_large_message())
        return self.get_response(request)
