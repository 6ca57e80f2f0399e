"""The Celery application.

Tasks are thin: they receive ids (JSON only), load rows and call services. Model work goes
to the ``inference`` queue through :func:`ml_task`, which sets ``acks_late`` and
``reject_on_worker_lost`` so that a task whose worker dies is redelivered rather than lost;
every such task must therefore be safe to run twice (claims are conditional updates).
"""
from __future__ import annotations

import os
from functools import partial

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lesionsearch.settings")

app = Celery("lesionsearch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def route_task(name, args, kwargs, options, task=None, **kw):
    """Model tasks go to the inference queue, everything else to the light queue."""
    from django.conf import settings

    inference = getattr(task, "inference", False)
    return {"queue": settings.CELERY_QUEUE_INFERENCE if inference else settings.CELERY_QUEUE_LIGHT}


app.conf.task_routes = (route_task,)

#: Decorator for model tasks (inference, index builds, training): routed to the inference
#: queue, acknowledged only when done, and redelivered if the worker process dies.
ml_task = partial(app.task, acks_late=True, reject_on_worker_lost=True, inference=True)
#: Decorator for everything else (routed to the light queue).
light_task = partial(app.task, inference=False)


def sweep_unfinished_jobs() -> int:
    """Re-send or fail every unfinished job whose message or worker was lost: stale queries,
    index builds and reader-study preparations. Returns how many unfinished jobs were looked at.

    Every decision is a conditional update, so several workers sweeping at once re-send a job
    once. Never raises (the database or the broker may be down; the next sweep tries again)."""
    import logging

    from readerstudy.services import studies_sweep
    from retrieval.services.queries import jobs_sweep

    try:
        return jobs_sweep() + studies_sweep()
    except Exception:
        logging.getLogger(__name__).exception("sweeping unfinished jobs failed")
        return 0


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness by ``niceness`` (its pool processes inherit it); returns the
    niceness it runs at."""
    return os.nice(niceness) if niceness else os.nice(0)


@worker_init.connect
def _yield_the_cpu_to_the_web_tier(**kwargs) -> None:
    """Inference runs at WORKER_NICE, so that reads keep their latency while the worker is busy."""
    import logging

    from django.conf import settings

    logging.getLogger(__name__).info("worker running at niceness %s", lower_priority(settings.WORKER_NICE))


@worker_ready.connect
def _sweep_unfinished_jobs(**kwargs) -> None:
    """A worker that starts picks up what a stopped one left."""
    import logging

    count = sweep_unfinished_jobs()
    if count:
        logging.getLogger(__name__).info("looked at %s unfinished job(s) at start-up", count)


class JobSweeper(bootsteps.StartStopStep):
    """Sweep unfinished jobs every JOB_SWEEP_SECONDS while the worker runs.

    Without it a job whose broker message was lost (Redis restarted without persistence, a
    worker killed with its unacknowledged message) would wait for someone to read it (its page,
    the API) or for the next worker start. Runs on the worker's own timer, in the main process."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        from django.conf import settings

        self.tref = worker.timer.call_repeatedly(settings.JOB_SWEEP_SECONDS, sweep_unfinished_jobs)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


app.steps["worker"].add(JobSweeper)
