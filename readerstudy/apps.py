from __future__ import annotations

from django.apps import AppConfig


class ReaderStudyConfig(AppConfig):
    name = "readerstudy"
    verbose_name = "Reader studies"
    default_auto_field = "django.db.models.BigAutoField"
