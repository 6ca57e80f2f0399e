"""Sign-ins in the audit log, and the failure count of the sign-in lockout (lesionsearch.auth)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from lesionsearch import auth
from lesionsearch.audit.models import AuditEvent
from lesionsearch.audit.services import record


@receiver(user_login_failed, dispatch_uid="audit-login-failed")
def login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")
    locked = getattr(request, auth.LOCKED_ATTRIBUTE, 0) if request is not None else 0
    if locked:  # refused without checking the password: not counted again (the lockout does not grow)
        record(AuditEvent.Action.LOGIN_LOCKED, request=request, actor=username, detail={"username": username[:150],
                                                                                       "seconds_left": locked})
        return
    failures = auth.note_failure(username)
    record(AuditEvent.Action.LOGIN_FAILED, request=request, actor=username,
           detail={"username": username[:150], "failures": failures})


@receiver(user_logged_in, dispatch_uid="audit-logged-in")
def logged_in(sender, request, user, **kwargs):
    auth.note_success(user.get_username())
    record(AuditEvent.Action.LOGIN, user=user, request=request)
