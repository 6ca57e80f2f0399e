"""What the job framework knows of each kind of job, registered by the apps at start-up."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.apps import AppConfig
from django.db import models
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class JobKind:
    """One kind of background job.

    ``task`` is the Celery task that runs a job of this kind given its id (``task.delay(id)``).
    ``chunked``: the job runs as a chain of task runs (an index build's chunks); between two runs
    it stays RUNNING with no heartbeat, and the next run continues it without counting an
    attempt. ``fail_unclaimed_after``: seconds after which a job no worker ever claimed is
    failed (None: it waits for a worker however long). ``on_fail``: called with the job id
    after the framework failed a job (a sweep, a retry limit), inside that transaction, for the
    kind's own bookkeeping (a study whose preparation failed is failed too).
    """

    name: str
    model: type[models.Model]
    task: object
    label: str = ""
    chunked: bool = False
    fail_unclaimed_after: Callable[[], float | None] = field(default=lambda: None)
    never_picked_up: str = "No worker picked this job up; the analysis service may be stopped."
    interrupted: str = "The job was interrupted several times (its worker stopped) and has been stopped."
    on_fail: Callable[[int, str], None] | None = None


#: Every registered kind by name (``register`` fills it; a test may replace it with its own).
REGISTRY: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Make ``kind`` known to the sweep (idempotent by name: apps' ``ready()`` may run twice)."""
    REGISTRY[kind.name] = kind
    return kind


def register_all(kinds: Iterable[JobKind]) -> None:
    """Register each of an app's kinds (what its ``ready()`` does with its ``tasks.JOB_KINDS``)."""
    for kind in kinds:
        register(kind)


def registered() -> list[JobKind]:
    return list(REGISTRY.values())


def kind_of(model: type[models.Model]) -> JobKind:
    """The registered kind of a job model."""
    for kind in REGISTRY.values():
        if kind.model is model:
            return kind
    raise LookupError(f"{model.__name__} is not a registered job kind")


def job_task(decorator: Callable, name: str, run: str, id_param: str):
    """The Celery task of a job kind: a thin wrapper that takes a job's id and calls the kind's
    service ``run`` (a dotted path, imported when the task runs, so that a service module may
    import its app's tasks to send them) as ``run(**{id_param: job_id}, worker=<this worker>)``.
    ``decorator`` is one of ``lesionsearch.celery``'s (``ml_task``, ``light_task``, ``training_task``),
    which choose the queue and the redelivery guarantees; ``name`` is the task's registered name."""
    @decorator(bind=True, name=name)
    def task(self, job_id: int) -> None:
        """Run one job of this kind given its id."""
        import_string(run)(**{id_param: job_id}, worker=worker_name(self))

    return task


def worker_name(task) -> str:
    """Host and process of a bound Celery task: claims must tell apart a worker's pool processes."""
    import os

    return f"{task.request.hostname or 'worker'}:{os.getpid()}"


class JobAppConfig(AppConfig):
    """Base config of an app that has job kinds: at start-up it registers ``<app>.tasks.JOB_KINDS``
    (so that the sweep knows them). Subclass it through the module (``kinds.JobAppConfig``): a
    class imported into an app's ``apps.py`` would be a second candidate config for Django."""

    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        register_all(import_string(f"{self.name}.tasks.JOB_KINDS"))
