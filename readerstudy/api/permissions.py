"""Who may use which reader-study endpoint: readers read, study administrators (and staff) manage."""
from __future__ import annotations

from rest_framework.permissions import BasePermission

from lesionsearch.roles import READER, has_role
from readerstudy import selectors


class IsReader(BasePermission):
    message = "Taking part in reader studies needs the reader role."

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, READER)


class IsStudyAdmin(BasePermission):
    message = "Managing reader studies is for study administrators and staff."

    def has_permission(self, request, view) -> bool:
        return selectors.is_study_admin(request.user)
