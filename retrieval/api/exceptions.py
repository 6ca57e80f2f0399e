"""One JSON shape for every API error, and the exceptions the services raise mapped to HTTP.

Every error response of the API has the body::

    {"error": {"status": 400, "code": "invalid", "message": "image: No file was submitted.",
               "fields": {"image": ["No file was submitted."]}}}

``status`` repeats the HTTP status, ``code`` is a stable machine-readable word (DRF's error
codes: ``invalid``, ``not_authenticated``, ``authentication_failed``, ``permission_denied``,
``not_found``, ``method_not_allowed``, ``unsupported_media_type``, ``throttled``, plus
``too_large``, ``conflict``, ``unavailable`` and ``rejected`` of this API, and the PDF report's
``not_ready``, ``query_failed``, ``image_missing`` and ``image_unreadable``), ``message`` is
one readable sentence and ``fields`` (validation errors only) lists the messages per input
field. Unexpected failures are left to Django (a logged 500), never hidden here.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler

from retrieval.report import ReportUnavailable
from retrieval.services.queries import QueryRejected

_CODE_BY_STATUS = {400: "rejected", 413: "too_large", 503: "unavailable"}

T = TypeVar("T")


def found_or_404(lookup: Callable[[], T], missing: type[Exception], message: str) -> T:
    """What ``lookup()`` finds, or a 404 (``not_found``) saying ``message`` when it raises ``missing``
    (a model's ``DoesNotExist``)."""
    try:
        return lookup()
    except missing:
        raise exceptions.NotFound(message) from None


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class Conflict(exceptions.APIException):
    """The request is well-formed but the current state does not allow it (e.g. no trained model)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class ServiceRejected(exceptions.APIException):
    """A service refused the input; carries the service's own status (400, 413 or 503) and message."""

    def __init__(self, message: str, status_code: int):
        self.status_code = status_code
        super().__init__(detail=message, code=_CODE_BY_STATUS.get(status_code, "rejected"))


def _as_api_exception(exc: Exception) -> Exception:
    """Exceptions raised below DRF (services, Django's request parsing) as APIExceptions."""
    if isinstance(exc, QueryRejected):
        return ServiceRejected(str(exc), getattr(exc, "status_code", status.HTTP_400_BAD_REQUEST))
    if isinstance(exc, ReportUnavailable):  # 409 with its own code: not_ready, query_failed, image_missing ...
        return Conflict(str(exc), code=exc.code)
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge("The form fields of the request are too large (files are not counted).")
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return exceptions.ParseError(str(exc) or "Too many form fields or files.")
    return exc


def _messages(detail) -> list[str]:
    if isinstance(detail, dict):
        return [f"{key}: {message}" for key, value in detail.items() for message in _messages(value)]
    if isinstance(detail, list):
        return [message for item in detail for message in _messages(item)]
    return [str(detail)]


def _fields(detail: dict) -> dict[str, list[str]]:
    return {key: _messages(value) for key, value in detail.items()}


def error_body(status_code: int, code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    body = {"status": status_code, "code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def _validation_body(status_code: int, detail) -> dict:
    if isinstance(detail, dict):
        non_field = _messages(detail.get("non_field_errors", []))
        fields = _fields({k: v for k, v in detail.items() if k != "non_field_errors"})
        summary = non_field + [f"{name}: {' '.join(messages)}" for name, messages in fields.items()]
        return error_body(status_code, "invalid", " ".join(summary) or "Invalid input.", fields or None)
    return error_body(status_code, "invalid", " ".join(_messages(detail)) or "Invalid input.")


def api_exception_handler(exc: Exception, context: dict):
    """DRF's EXCEPTION_HANDLER: DRF's own handling, then every body rewritten to the one shape."""
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:  # not an API error: let Django log it and answer 500
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = _validation_body(response.status_code, exc.detail)
    else:
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(response.status_code, code, " ".join(_messages(exc.detail)))
    return response


@csrf_exempt  # a POST or DELETE to no endpoint is a JSON 404 too, not Django's HTML CSRF 403
def api_not_found(request, path: str = ""):
    """JSON 404 for any path under /api/ that matches no endpoint (instead of Django's HTML page)."""
    message = f"No API endpoint at {request.path}."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            message += f" Did you mean {request.path}/ (with a trailing slash)?"
    return JsonResponse(error_body(404, "not_found", message), status=404)


# --- For the schema ------------------------------------------------------------------------
class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="the HTTP status code, repeated")
    code = serializers.CharField(help_text="a stable machine-readable error code, e.g. invalid, not_found, too_large")
    message = serializers.CharField(help_text="one readable sentence saying what went wrong")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="validation errors only: the messages per input field",
    )


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    error = ErrorDetailSerializer()
