"""One row per audited action. Rows are only ever added (services.record); nothing edits them."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    class Action(models.TextChoices):
        QUERY_SUBMIT = "query.submit", "query submitted"
        QUERY_DELETE = "query.delete", "query deleted"
        QUERY_REPORT = "query.report", "query report exported (PDF)"
        STUDY_CREATE = "study.create", "study created"
        STUDY_OPEN = "study.open", "study opened"
        STUDY_CLOSE = "study.close", "study closed"
        STUDY_ASSIGN = "study.assign", "readers assigned"
        STUDY_UNASSIGN = "study.unassign", "reader removed"
        STUDY_REPORT = "study.report", "study report read"
        STUDY_EXPORT = "study.export", "study exported"
        INDEX_REBUILD = "index.rebuild", "index build requested"
        INDEX_ACTIVATE = "index.activate", "index activated"
        INDEX_REMOVE = "index.remove", "index version removed (files and row)"
        CASE_WITHDRAW = "case.withdraw", "library case withdrawn"
        CASE_RESTORE = "case.restore", "library case restored"
        LOGIN = "auth.login", "signed in"
        LOGIN_FAILED = "auth.login_failed", "sign-in failed"
        LOGIN_LOCKED = "auth.login_locked", "sign-in refused (too many failures)"
        AUDIT_EXPORT = "audit.export", "audit log exported"

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    #: Who acted; null for management commands and anonymous sign-in attempts (see ``actor``).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    #: The user name at the time (kept when the user is deleted), or "command:<os user>" for commands.
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    #: web, api, admin or command
    via = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        target = f" {self.object_type} #{self.object_id}" if self.object_id else ""
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor or '-'} {self.action}{target}"
