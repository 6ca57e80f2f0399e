"""Page views' access checks: the rules themselves are selectors (who may query, who manages studies)."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


def allowed_only(rule: Callable[[object], bool], refusal: str):
    """A view decorator: signed-in users for whom ``rule(user)`` holds; anyone else signed in gets
    403 with ``refusal``, anyone signed out the sign-in page."""
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not rule(request.user):
                raise PermissionDenied(refusal)
            return view(request, *args, **kwargs)
        return login_required(wrapped)
    return decorator
