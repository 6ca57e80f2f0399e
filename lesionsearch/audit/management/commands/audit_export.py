"""Write the audit log (or part of it) as CSV, for archiving or review outside the admin."""
from __future__ import annotations

from datetime import datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from lesionsearch.audit.export import write_csv
from lesionsearch.audit.models import AuditEvent
from lesionsearch.audit.selectors import audit_event_list


def _day(value: str) -> datetime:
    try:
        return timezone.make_aware(datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time.min))
    except ValueError:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Write audit events as CSV to standard output (oldest first), optionally from/until a day or one action."

    def add_arguments(self, parser):
        parser.add_argument("--since", metavar="YYYY-MM-DD", help="events on or after this day")
        parser.add_argument("--until", metavar="YYYY-MM-DD", help="events before this day")
        parser.add_argument("--action", choices=AuditEvent.Action.values, help="only this action")

    def handle(self, *args, since, until, action, **options):
        events = audit_event_list(since=_day(since) if since else None, until=_day(until) if until else None,
                                  action=action)
        write_csv(events, self.stdout)
