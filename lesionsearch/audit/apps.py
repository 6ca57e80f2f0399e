from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "lesionsearch.audit"
    label = "audit"
    verbose_name = "Audit log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from lesionsearch.audit import signals  # noqa: F401  (sign-in receivers)
