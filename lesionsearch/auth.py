"""Sign-in limits: a user name with LOGIN_FAILURE_LIMIT failed sign-ins within LOGIN_LOCKOUT_SECONDS
is locked for LOGIN_LOCKOUT_SECONDS, on the web sign-in page and in the admin alike.

Failures are counted per user name (not per IP: behind the TLS proxy every client may share one
address) in the Django cache. The backend refuses a locked name before checking the password, so
guessing goes no further during the lockout; the sign-in page then answers 429 with the time left.
A successful sign-in clears the count. Every failure and refusal is written to the audit log.
"""
from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

#: Set on the request by the backend when it refused a locked user name (seconds left).
LOCKED_ATTRIBUTE = "login_locked_seconds"


def _key(kind: str, username: str) -> str:
    digest = hashlib.sha256(username.strip().casefold().encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"login-{kind}:{digest}"


def locked_seconds(username: str | None) -> int:
    """Seconds until ``username`` may try to sign in again; 0 when it is not locked."""
    if not username:
        return 0
    until = cache.get(_key("locked-until", username))
    return max(0, math.ceil(until - time.time())) if until else 0


def note_failure(username: str | None) -> int:
    """Count a failed sign-in; lock the user name when it reaches the limit. Returns the count."""
    if not username:
        return 0
    window = settings.LOGIN_LOCKOUT_SECONDS
    key = _key("failures", username)
    cache.add(key, 0, timeout=window)  # the window starts at the first failure
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        count = 1
    if count >= settings.LOGIN_FAILURE_LIMIT:
        cache.set(_key("locked-until", username), time.time() + window, timeout=window)
        cache.delete(key)
    return count


def note_success(username: str | None) -> None:
    if username:
        cache.delete(_key("failures", username))


class LockoutModelBackend(ModelBackend):
    """Django's model backend, refusing user names that are locked out (see the module docstring)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        name = username if username is not None else kwargs.get(get_user_model().USERNAME_FIELD)
        seconds = locked_seconds(name)
        if seconds:
            if request is not None:
                setattr(request, LOCKED_ATTRIBUTE, seconds)
            raise PermissionDenied("too many failed sign-ins")  # no other backend is asked either
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (f"Too many failed sign-ins for this user name. Please wait {minutes} minute{'s' if minutes != 1 else ''} "
            "and try again, or ask an administrator to reset your password.")


class LoginView(auth_views.LoginView):
    """The sign-in page; a locked user name gets 429 with a message saying how long to wait."""

    def form_invalid(self, form):
        seconds = getattr(self.request, LOCKED_ATTRIBUTE, 0)
        if not seconds:
            return super().form_invalid(form)
        response = self.render_to_response(self.get_context_data(form=form, locked=lockout_message(seconds)))
        response.status_code = 429
        response["Retry-After"] = str(seconds)
        return response
