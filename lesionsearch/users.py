"""User writes: the demo accounts (``setup_demo``). Roles are groups (:mod:`lesionsearch.roles`)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from lesionsearch.roles import STUDY_ADMIN


@transaction.atomic
def demo_user_ensure(*, username: str, password: str, role: str | None = None, superuser: bool = False):
    """The user of this name, created with ``password`` when missing (staff when a superuser or a
    study administrator; an existing user keeps its password), and put in ``role``'s group.
    Returns ``(user, created)``."""
    user, created = get_user_model().objects.get_or_create(
        username=username, defaults={"is_staff": superuser or role == STUDY_ADMIN})
    if created:
        user.set_password(password)
        user.is_superuser = superuser
        user.save()
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user, created
