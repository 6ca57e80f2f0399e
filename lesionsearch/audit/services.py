"""Writing the audit log. ``record`` is called by the services (and the few views and commands)
where an audited action happens, inside the action's transaction: an action that rolls back
leaves no event, and an event is never written without its action.

The request of the current thread (set by :class:`lesionsearch.audit.middleware.AuditContextMiddleware`)
supplies the client IP and the channel (web, api, admin); without one (management commands,
workers) the channel is "command" and the actor the operating-system user.
"""
from __future__ import annotations

import getpass
from contextvars import ContextVar

from django.conf import settings
from django.db import models

from lesionsearch.audit.models import AuditEvent

Action = AuditEvent.Action

_current_request: ContextVar = ContextVar("audit_request", default=None)


def client_ip(request) -> str | None:
    """The client's IP: REMOTE_ADDR, or with TRUST_X_FORWARDED_FOR the address the (one, trusted)
    proxy in front of the web tier appended to X-Forwarded-For."""
    if request is None:
        return None
    address = request.META.get("REMOTE_ADDR") or None
    if getattr(settings, "TRUST_X_FORWARDED_FOR", False):
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        address = forwarded[-1] if forwarded else address
    return address


def _channel(request) -> str:
    if request is None:
        return "command"
    path = request.path_info or ""
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/admin/"):
        return "admin"
    return "web"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def record(action: str, *, user=None, obj: models.Model | None = None, object_type: str = "",
           object_id: str | int = "", detail: dict | None = None, request=None, actor: str = "") -> AuditEvent:
    """Write one audit event.

    ``user``: who acted (default: the signed-in user of the current request, if any); ``obj``: the
    model instance acted on (or ``object_type``/``object_id``); ``detail``: JSON-serialisable facts
    (never image content or passwords); ``actor``: the name to show when there is no user.
    """
    request = request if request is not None else _current_request.get()
    if user is None and request is not None:
        candidate = getattr(request, "user", None)
        user = candidate if candidate is not None and candidate.is_authenticated else None
    if user is not None and not user.is_authenticated:
        user = None
    if obj is not None:
        object_type, object_id = obj._meta.label_lower, obj.pk
    via = _channel(request)
    if not actor:
        actor = user.get_username() if user is not None else (f"command:{_os_user()}" if via == "command" else "")
    if action not in AuditEvent.Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    return AuditEvent.objects.create(user=user, actor=actor[:150], action=action, object_type=object_type[:64],
                                     object_id=str(object_id)[:64], detail=detail or {}, ip=client_ip(request),
                                     via=via)


def record_if_database(action: str, **options) -> str | None:
    """``record`` when the audit log's table exists; otherwise nothing is written and the reason is
    returned (for commands that also work on a checkout without a database, such as the reader
    study and MRMC reports). Errors while writing to an existing table still propagate."""
    from django.db import DatabaseError, connection

    try:
        tables = connection.introspection.table_names()
    except DatabaseError as exc:
        return f"no database ({exc})"
    if AuditEvent._meta.db_table not in tables:
        return "the database has no audit log table (run `python manage.py migrate`)"
    record(action, **options)
    return None
