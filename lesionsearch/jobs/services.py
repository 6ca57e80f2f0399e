"""The life cycle of a background job, written once for every kind (``kinds.JobKind``).

A service creates a PENDING row and calls ``enqueue_on_commit``; the worker's task calls
``claim`` (a conditional update: of several deliveries of one message exactly one wins, and a
job whose worker stopped sending heartbeats for ``JOB_STALE_SECONDS`` can be taken over), then
``heartbeat``/``progress`` while it works and ``finish`` or ``fail``, which only the claiming
worker can write (``held``): a worker that lost its job to a takeover cannot overwrite the
result. ``refresh`` (on reads, and every ``JOB_SWEEP_SECONDS`` from every worker through
``sweep``) re-sends a job whose message was lost, fails one that no worker picked up in time,
and fails one interrupted ``JOB_MAX_ATTEMPTS`` times. Every decision is a conditional update,
so several workers sweeping at once re-send a job once.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from lesionsearch.jobs import notify
from lesionsearch.jobs.kinds import JobKind, registered
from lesionsearch.jobs.models import FINAL, UNFINISHED, Job, JobStatus

logger = logging.getLogger(__name__)

Status = JobStatus
WORKER_LENGTH = 255


def _rows(kind: JobKind, job_id: int) -> QuerySet:
    return kind.model.objects.filter(id=job_id)


def send(kind: JobKind, job_id: int, *, stamped: bool = False) -> None:
    """Send the job's task now (and note when, unless ``stamped``: the row already says). A broker
    that is down is logged, not raised: the sweep re-sends the job."""
    if not stamped:
        _rows(kind, job_id).update(enqueued_at=timezone.now())
    try:
        kind.task.delay(job_id)
    except Exception:  # broker unreachable: refresh re-sends it
        logger.exception("could not enqueue %s %s; it will be re-sent", kind.name, job_id)


def enqueue_on_commit(kind: JobKind, job_id: int, *, stamped: bool = False) -> None:
    """Send the job's task once the current transaction commits (so the worker finds the row).
    ``stamped``: the caller created the row with ``enqueued_at`` set (:func:`enqueued_now`), which
    saves a write after the commit on the paths a person waits on (a query, its evidence)."""
    transaction.on_commit(lambda: send(kind, job_id, stamped=stamped))


def enqueued_now() -> dict:
    """The field of a job row created to be sent when its transaction commits (``stamped``)."""
    return {"enqueued_at": timezone.now()}


def claim(kind: JobKind, job_id: int, worker: str, *, related: tuple[str, ...] = ()) -> Job | None:
    """Take the job for ``worker``: a pending job, the next run of a chunked job, or a job whose
    holder stopped sending heartbeats (a takeover, counted as an attempt). None when another live
    worker holds it, it is finished, or it has used its attempts (``refresh`` then fails it).
    The claimed row is read once, with the ``related`` rows the run needs (``select_related``)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.JOB_STALE_SECONDS)
    worker = worker[:WORKER_LENGTH]
    rows = _rows(kind, job_id)
    below_limit = Q(attempts__lt=settings.JOB_MAX_ATTEMPTS)
    claimed = rows.select_related(*related) if related else rows
    if rows.filter(below_limit, status=Status.PENDING).update(
            status=Status.RUNNING, started_at=Coalesce("started_at", now), heartbeat_at=now, worker=worker,
            attempts=F("attempts") + 1):
        return claimed.get()
    if kind.chunked and rows.filter(status=Status.RUNNING, heartbeat_at__isnull=True).update(
            heartbeat_at=now, worker=worker):
        return claimed.get()
    if rows.filter(below_limit, status=Status.RUNNING, heartbeat_at__lt=stale).update(
            heartbeat_at=now, worker=worker, attempts=F("attempts") + 1):
        logger.warning("%s %s: taken over from a worker that stopped", kind.name, job_id)
        return claimed.get()
    return None


def held(kind: JobKind, job_id: int, worker: str) -> QuerySet:
    """The job's row while ``worker`` holds it (empty once it was finished, failed, deleted or
    taken over): the only rows a worker may write its results to."""
    return _rows(kind, job_id).filter(status=Status.RUNNING, worker=worker[:WORKER_LENGTH])


def heartbeat(kind: JobKind, job_id: int, worker: str) -> bool:
    """Say ``worker`` is still at it; False when it no longer holds the job."""
    return bool(held(kind, job_id, worker).update(heartbeat_at=timezone.now()))


class Beats:
    """The heartbeats of one short run (a query's first stage): :meth:`beat` writes one only when
    ``JOB_STALE_SECONDS / 10`` have passed since the claim or the last one, so a run of a fraction
    of a second writes no row for nothing, while a slow one (a large model on a CPU) still beats
    well within the time after which the sweep takes it over."""

    def __init__(self, kind: JobKind, job_id: int, worker: str) -> None:
        self.kind, self.job_id, self.worker = kind, job_id, worker
        self.last = time.monotonic()  # the claim wrote the first heartbeat

    def beat(self) -> None:
        now = time.monotonic()
        if now - self.last >= settings.JOB_STALE_SECONDS / 10:
            heartbeat(self.kind, self.job_id, self.worker)
            self.last = now


def progress(kind: JobKind, job_id: int, worker: str, *, done: int | None = None, total: int | None = None,
             message: str | None = None) -> bool:
    """Record progress (and a heartbeat); False when ``worker`` no longer holds the job."""
    fields = {"heartbeat_at": timezone.now()}
    fields.update({name: value for name, value in (("done", done), ("total", total), ("message", message))
                   if value is not None})
    return bool(held(kind, job_id, worker).update(**fields))


def parts_progress(kind: JobKind, job_id: int, *, done: int) -> bool:
    """Record the progress of a job whose parts run as jobs of their own on other workers (an index
    build's chunks), which do not hold the job itself: only while it is unfinished."""
    return bool(_rows(kind, job_id).filter(status__in=UNFINISHED).update(done=done))


def release(kind: JobKind, job_id: int, worker: str) -> bool:
    """End one run of a chunked job without finishing it: RUNNING without a heartbeat, so that
    the next run (any worker) continues it."""
    return bool(held(kind, job_id, worker).update(heartbeat_at=None))


def finish(kind: JobKind, job_id: int, worker: str, *, message: str | None = None, **fields) -> bool:
    """Mark the job DONE with ``fields`` (its results) if ``worker`` still holds it."""
    if message is not None:
        fields["message"] = message
    finished = bool(held(kind, job_id, worker).update(status=Status.DONE, finished_at=timezone.now(),
                                                       heartbeat_at=None, **fields))
    if finished:
        transaction.on_commit(lambda: notify.notify(kind.name))  # wakes the readers waiting for it
    return finished


def fail(kind: JobKind, job_id: int, message: str, *, worker: str | None = None, condition: Q | None = None,
         **fields) -> bool:
    """Mark the job FAILED with a message a person can read: only if ``worker`` holds it, or,
    without a worker (a sweep, an administrator), if it is not finished (and matches
    ``condition``, checked in the same conditional update)."""
    rows = held(kind, job_id, worker) if worker is not None else _rows(kind, job_id).filter(status__in=UNFINISHED)
    if condition is not None:
        rows = rows.filter(condition)
    with transaction.atomic():
        failed = bool(rows.update(status=Status.FAILED, finished_at=timezone.now(), heartbeat_at=None,
                                  message=message, **fields))
        if failed and kind.on_fail is not None:
            kind.on_fail(job_id, message)
    if failed:
        logger.error("%s %s failed: %s", kind.name, job_id, message)
        transaction.on_commit(lambda: notify.notify(kind.name))
    return failed


def refresh(kind: JobKind, job: Job, *, rows: QuerySet | None = None) -> Job:
    """Re-read a job; re-send it when its message was lost, fail it when it cannot be run.

    * waiting (PENDING, or a chunked job between runs) and not sent for
      ``QUERY_PENDING_RESEND_SECONDS``: sent again (harmless if the first message is merely slow:
      the claim is conditional); never claimed for the kind's ``fail_unclaimed_after``: failed;
    * RUNNING with a heartbeat older than ``JOB_STALE_SECONDS`` (its worker died): sent again,
      once per stale period, or failed after ``JOB_MAX_ATTEMPTS`` runs.
    """
    if job.status in FINAL:
        return job
    rows = _rows(kind, job.id) if rows is None else rows
    now = timezone.now()
    stale = now - timedelta(seconds=settings.JOB_STALE_SECONDS)
    resend = now - timedelta(seconds=settings.QUERY_PENDING_RESEND_SECONDS)
    unclaimed_limit = kind.fail_unclaimed_after()
    waiting = job.status == Status.PENDING or (kind.chunked and job.status == Status.RUNNING
                                               and job.heartbeat_at is None)
    dead = job.status == Status.RUNNING and job.heartbeat_at is not None and job.heartbeat_at < stale
    never_claimed = (job.status == Status.PENDING and unclaimed_limit is not None
                     and job.created_at < now - timedelta(seconds=unclaimed_limit))
    # A page or API client polls a healthy job several times a second: when the row shows nothing
    # due, skip the conditional updates below (one SELECT per poll: the re-read). ``rows``: the
    # queryset to re-read the job from (e.g. with the relations the caller shows).
    due = (waiting and (job.enqueued_at is None or job.enqueued_at < resend)) or dead or never_claimed
    if not due:
        return rows.get()  # re-read: a poll loop passes the row it read last time
    # What was due is decided on the row just read; what is done, by conditional updates on the
    # row as it is now (it may have moved on since it was read).
    if unclaimed_limit is not None and fail(kind, job.id, kind.never_picked_up, condition=Q(
            status=Status.PENDING, created_at__lt=now - timedelta(seconds=unclaimed_limit))):
        pass
    elif fail(kind, job.id, kind.interrupted, condition=Q(
            status=Status.RUNNING, heartbeat_at__lt=stale, attempts__gte=settings.JOB_MAX_ATTEMPTS)):
        pass
    else:
        waiting_rows = Q(status=Status.PENDING) | (Q(status=Status.RUNNING, heartbeat_at__isnull=True)
                                                   if kind.chunked else Q(pk__in=[]))
        lost = (waiting_rows & (Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=resend))) | Q(
            status=Status.RUNNING, heartbeat_at__lt=stale, enqueued_at__lt=stale) | Q(
            status=Status.RUNNING, heartbeat_at__lt=stale, enqueued_at__isnull=True)
        if _rows(kind, job.id).filter(lost).update(enqueued_at=now):
            logger.warning("%s %s looks stuck (%s); sending it again", kind.name, job.id, job.status)
            send(kind, job.id)
    return rows.get()


def sweep() -> int:
    """Refresh every unfinished job of every registered kind; returns how many were looked at."""
    count = 0
    for kind in registered():
        for job in kind.model.objects.filter(status__in=UNFINISHED):
            refresh(kind, job)
            count += 1
    return count


# --- Workers' signs of life -------------------------------------------------------------------

def worker_beat_timeout() -> float:
    """Seconds without a beat after which a worker counts as gone: three missed sweeps."""
    return 3 * settings.JOB_SWEEP_SECONDS + 5


def worker_beat(*, hostname: str, pid: int, queues: list[str], started_at) -> None:
    """Record that the worker process ``hostname:pid`` is alive and consumes ``queues``."""
    from lesionsearch.jobs.models import WorkerBeat

    WorkerBeat.objects.update_or_create(
        name=f"{hostname}:{pid}"[:WORKER_LENGTH],
        defaults={"hostname": hostname[:WORKER_LENGTH], "pid": pid, "queues": sorted(queues),
                  "started_at": started_at, "beat_at": timezone.now(), "stopped_at": None})


def worker_stopped(*, hostname: str, pid: int) -> None:
    """Record that the worker process stopped (a warm shutdown; a killed one just stops beating)."""
    from lesionsearch.jobs.models import WorkerBeat

    WorkerBeat.objects.filter(name=f"{hostname}:{pid}"[:WORKER_LENGTH]).update(stopped_at=timezone.now())


def worker_beats_forget(*, older_than: float) -> int:
    """Delete the beats of workers gone for ``older_than`` seconds (a restarted worker has a new pid)."""
    from lesionsearch.jobs.models import WorkerBeat

    cutoff = timezone.now() - timedelta(seconds=older_than)
    return WorkerBeat.objects.filter(beat_at__lt=cutoff).delete()[0]
