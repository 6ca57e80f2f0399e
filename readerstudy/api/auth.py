"""API-token access to the reader-study image views (pages use the session; integrations a token)."""
from __future__ import annotations

from functools import wraps

from django.http import JsonResponse
from django.utils.cache import patch_vary_headers
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from lesionsearch.views import _media_user
from retrieval.api.exceptions import error_body


def token_or_session(view):
    """Sign the request in with an ``Authorization: Token`` header when there is no session, as
    /media/ does, so that the image URLs the API hands out work for API clients. The wrapped
    view keeps its own checks (login_required, the reader's assignment, the washout)."""
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            user = _media_user(request)
        except AuthenticationFailed as exc:
            response = JsonResponse(error_body(401, "authentication_failed", str(exc.detail)), status=401)
            response["WWW-Authenticate"] = TokenAuthentication().authenticate_header(request)
            return response
        if user is not None:
            request.user = user
        response = view(request, *args, **kwargs)
        # The same URL answers differently per credentials.
        patch_vary_headers(response, ("Cookie", "Authorization"))
        return response
    return wrapped
