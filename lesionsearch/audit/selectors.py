"""Reads of the audit log."""
from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from lesionsearch.audit.models import AuditEvent


def audit_event_list(*, since: datetime | None = None, until: datetime | None = None,
                     action: str | None = None) -> QuerySet[AuditEvent]:
    """Audit events, oldest first: at or after ``since``, before ``until``, of one ``action``, as given."""
    events = AuditEvent.objects.order_by("time", "id")
    if since is not None:
        events = events.filter(time__gte=since)
    if until is not None:
        events = events.filter(time__lt=until)
    if action:
        events = events.filter(action=action)
    return events
