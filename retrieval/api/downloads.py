"""What the API views that answer with a file (a PDF report, a zip export) share."""
from __future__ import annotations

from rest_framework.renderers import JSONRenderer


class FileDownloadMixin:
    """A view whose success is a file's bytes whatever the Accept header says, and whose errors are
    JSON (the one error body): content negotiation always picks the JSON renderer, and ``?format=``
    is not DRF's format override (a view may give it a meaning of its own)."""

    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(self, request, force=False):
        renderer = self.get_renderers()[0]
        return renderer, renderer.media_type
