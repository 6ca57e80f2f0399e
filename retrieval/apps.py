from __future__ import annotations

from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "retrieval"
    verbose_name = "Case library and retrieval"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lesionsearch.jobs.kinds import register_all
        from retrieval.tasks import JOB_KINDS

        register_all(JOB_KINDS)
