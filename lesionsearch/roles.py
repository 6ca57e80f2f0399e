"""User roles, kept as Django groups. Staff (``is_staff``) use the Django admin.

Stored group names never change: permissions and tests refer to them.
"""
from __future__ import annotations

CLINICIAN = "clinician"
READER = "reader"
STUDY_ADMIN = "study admin"

ROLES = (CLINICIAN, READER, STUDY_ADMIN)
ROLE_LABELS = {
    CLINICIAN: "Clinician: queries the case library",
    READER: "Reader: takes part in reader studies",
    STUDY_ADMIN: "Study administrator: runs reader studies and exports results",
}


def has_role(user, role: str) -> bool:
    """True when ``user`` is active and in the role's group (superusers have every role)."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name=role).exists()


def roles_of(user) -> set[str]:
    if not user.is_authenticated or not user.is_active:
        return set()
    if user.is_superuser:
        return set(ROLES)
    return set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
