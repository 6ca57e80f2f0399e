"""Who may use which endpoint: the rules are selectors (``retrieval.selectors.user_may_*``). Roles are
Django groups (lesionsearch.roles); staff may do everything.

Readers take part in reader studies whose cases come from the library; a reader who could
list the library's cases would learn the ground truth of the study images. So the case
endpoints are for clinicians, study administrators and staff only; a user whose only role is
reader gets 403 there.
"""
from __future__ import annotations

from rest_framework.permissions import BasePermission

from retrieval import selectors


class IsClinicianOrStaff(BasePermission):
    message = "Querying the case library needs the clinician role."

    def has_permission(self, request, view) -> bool:
        return selectors.user_may_query(request.user)


class MayBrowseCases(BasePermission):
    message = ("Browsing the case library needs the clinician or study admin role "
               "(readers may not see library diagnoses, as they include reader-study cases).")

    def has_permission(self, request, view) -> bool:
        return selectors.user_may_browse_cases(request.user)


class HasAnyRole(BasePermission):
    message = "This needs a LesionSearch role (clinician, reader or study admin)."

    def has_permission(self, request, view) -> bool:
        return selectors.user_has_any_role(request.user)


class IsStaff(BasePermission):
    message = "Only staff may do this."

    def has_permission(self, request, view) -> bool:
        return selectors.user_is_staff(request.user)
