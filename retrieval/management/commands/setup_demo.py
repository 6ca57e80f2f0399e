from __future__ import annotations

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from lesionsearch.roles import CLINICIAN, READER, STUDY_ADMIN

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
        User = get_user_model()
        for username, role, superuser in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username, defaults={"is_staff": superuser or role == STUDY_ADMIN})
            if created:
                user.set_password(password)
                user.is_superuser = superuser
                user.save()
            if role:
                user.groups.add(Group.objects.get(name=role))
            self.stdout.write(f"{'created' if created else 'exists '} {username}" + (f" ({role})" if role else " (superuser)"))
