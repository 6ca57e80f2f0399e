from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The job framework: its models are the abstract ``Job`` and the workers' ``WorkerBeat``."""

    name = "lesionsearch.jobs"
    label = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
