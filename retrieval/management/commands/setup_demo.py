from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from lesionsearch.roles import CLINICIAN, READER, STUDY_ADMIN
from lesionsearch.users import demo_user_ensure

DEMO_USERS = (
    ("clinician", CLINICIAN, False),
    ("reader", READER, False),
    ("studyadmin", STUDY_ADMIN, False),
    ("admin", None, True),
)


class Command(BaseCommand):
    help = "Create the demo users (one per role plus a superuser) if they do not exist. Local development only."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="also when DEBUG is off")

    def handle(self, *args, force: bool, **options):
        if not settings.DEBUG and not force:
            raise CommandError("refusing to create demo users with DEBUG off (use --force on a test deployment)")
        password = os.environ.get("DEMO_PASSWORD", "lesionsearch-demo")
        for username, role, superuser in DEMO_USERS:
            _, created = demo_user_ensure(username=username, password=password, role=role, superuser=superuser)
            self.stdout.write(f"{'created' if created else 'exists '} {username}" + (f" ({role})" if role else " (superuser)"))
