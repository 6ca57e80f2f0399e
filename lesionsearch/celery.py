"""The Celery application.

Tasks are thin: they receive ids (JSON only), load rows and call services. Model work goes
to the ``inference`` queue through :func:`ml_task`, which sets ``acks_late`` and
``reject_on_worker_lost`` so that a task whose worker dies is redelivered rather than lost;
every such task must therefore be safe to run twice (claims are conditional updates).

This module holds the app, its queues and routing only. What every worker does besides running
tasks (sweep unfinished jobs, yield the CPU to the web tier) is ``lesionsearch.jobs.worker``'s,
added here as a worker step.
"""
from __future__ import annotations

import os
from functools import partial

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lesionsearch.settings")

app = Celery("lesionsearch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def route_task(name, args, kwargs, options, task=None, **kw):
    """Training goes to the training queue, other model tasks to the inference queue, everything
    else to the light queue."""
    from django.conf import settings

    if getattr(task, "training", False):
        return {"queue": settings.CELERY_QUEUE_TRAINING}
    inference = getattr(task, "inference", False)
    return {"queue": settings.CELERY_QUEUE_INFERENCE if inference else settings.CELERY_QUEUE_LIGHT}


app.conf.task_routes = (route_task,)

#: Decorator for model tasks (inference, index builds, training): routed to the inference
#: queue, acknowledged only when done, and redelivered if the worker process dies.
ml_task = partial(app.task, acks_late=True, reject_on_worker_lost=True, inference=True)
#: Decorator for training tasks: like ``ml_task``, routed to the training queue.
training_task = partial(app.task, acks_late=True, reject_on_worker_lost=True, inference=True, training=True)
#: Decorator for everything else (routed to the light queue).
light_task = partial(app.task, inference=False)


def _add_worker_steps() -> None:
    from lesionsearch.jobs.worker import JobSweeper

    app.steps["worker"].add(JobSweeper)


_add_worker_steps()
