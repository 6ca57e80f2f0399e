"""What every worker process does besides running tasks: sweep unfinished jobs (at start-up and
every JOB_SWEEP_SECONDS, every registered job kind) and run below the web tier's CPU priority.

``lesionsearch.celery`` adds :class:`JobSweeper` to its worker; the signal handlers below are
connected when this module is imported (by that same step).
"""
from __future__ import annotations

import logging
import os

from celery import bootsteps
from celery.signals import worker_init, worker_ready

logger = logging.getLogger(__name__)
#: Seconds after its last beat that a gone worker is no longer listed (a restarted one has a new pid).
FORGET_WORKERS_AFTER = 24 * 3600


def sweep_unfinished_jobs() -> int:
    """Re-send or fail every unfinished job whose message or worker was lost (every kind the
    apps registered with ``lesionsearch.jobs``). Returns how many unfinished jobs were looked at.

    Never raises (the database or the broker may be down; the next sweep tries again)."""
    from lesionsearch.jobs.services import sweep

    try:
        return sweep()
    except Exception:
        logger.exception("sweeping unfinished jobs failed")
        return 0


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness by ``niceness`` (its pool processes inherit it); returns the
    niceness it runs at."""
    return os.nice(niceness) if niceness else os.nice(0)


@worker_init.connect
def _yield_the_cpu_to_the_web_tier(**kwargs) -> None:
    """Inference runs at WORKER_NICE, so that reads keep their latency while the worker is busy."""
    from django.conf import settings

    logger.info("worker running at niceness %s", lower_priority(settings.WORKER_NICE))


@worker_ready.connect
def _sweep_unfinished_jobs(**kwargs) -> None:
    """A worker that starts picks up what a stopped one left."""
    count = sweep_unfinished_jobs()
    if count:
        logger.info("looked at %s unfinished job(s) at start-up", count)


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

        self.hostname, self.pid, self.started_at = worker.hostname, os.getpid(), _now()
        self.queues = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)

        def beat_and_sweep() -> None:
            self.beat()
            sweep_unfinished_jobs()

        self.beat()
        self.tref = worker.timer.call_repeatedly(settings.JOB_SWEEP_SECONDS, beat_and_sweep)

    def beat(self) -> None:
        """This worker's sign of life (the operations page, /metrics); never raises."""
        from lesionsearch.jobs.services import worker_beat, worker_beats_forget

        try:
            worker_beat(hostname=self.hostname, pid=self.pid, queues=self.queues, started_at=self.started_at)
            worker_beats_forget(older_than=FORGET_WORKERS_AFTER)
        except Exception:
            logger.exception("recording the worker's beat failed")

    def stop(self, worker):
        from lesionsearch.jobs.services import worker_stopped

        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
            try:
                worker_stopped(hostname=self.hostname, pid=self.pid)
            except Exception:
                logger.exception("recording the worker's stop failed")


def _now():
    from django.utils import timezone

    return timezone.now()

