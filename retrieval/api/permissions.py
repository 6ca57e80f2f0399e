"""Who may use which endpoint. Roles are Django groups (lesionsearch.roles); staff may do everything.

Readers take part in reader studies whose cases come from the library; a reader who could
list the library's cases would learn the ground truth of the study images. So the case
endpoints are for clinicians, study administrators and staff only; a user whose only role is
reader gets 403 there.
"""
from __future__ import annotations

from rest_framework.permissions import BasePermission

from lesionsearch.roles import CLINICIAN, STUDY_ADMIN, has_role, roles_of


def _is_staff(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


class IsClinicianOrStaff(BasePermission):
    message = "Querying the case library needs the clinician role."

    def has_permission(self, request, view) -> bool:
        return _is_staff(request.user) or has_role(request.user, CLINICIAN)


class MayBrowseCases(BasePermission):
    message = ("Browsing the case library needs the clinician or study admin role "
               "(readers may not see library diagnoses, as they include reader-study cases).")

    def has_permission(self, request, view) -> bool:
        user = request.user
        return _is_staff(user) or has_role(user, CLINICIAN) or has_role(user, STUDY_ADMIN)


class HasAnyRole(BasePermission):
    message = "This needs a LesionSearch role (clinician, reader or study admin)."

    def has_permission(self, request, view) -> bool:
        return _is_staff(request.user) or bool(roles_of(request.user))


class IsStaff(BasePermission):
    message = "Only staff may do this."

    def has_permission(self, request, view) -> bool:
        return _is_staff(request.user)
