from __future__ import annotations

from django.apps import AppConfig


class ReaderStudyConfig(AppConfig):
    name = "readerstudy"
    verbose_name = "Reader studies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lesionsearch.jobs.kinds import register_all
        from readerstudy.tasks import JOB_KINDS

        register_all(JOB_KINDS)
