"""The abstract job row every kind of background work extends."""
from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"


#: A job in one of these never changes status again.
FINAL = (JobStatus.DONE, JobStatus.FAILED)
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


class Job(models.Model):
    """Status, attempts, worker, heartbeat, times, message and progress of one background job.

    Only ``lesionsearch.jobs.services`` changes ``status``, ``attempts``, ``worker``,
    ``heartbeat_at`` and the times; the job's own service fills ``message`` and ``done`` /
    ``total`` through it, and its results in its own fields.
    """

    Status = JobStatus

    status = models.CharField(max_length=8, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="runs started (the first and every takeover)")
    worker = models.CharField(max_length=255, blank=True, help_text="the worker process that holds or held it")
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="when a task was last sent")
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="set while a worker holds the job (cleared between the chunks of a build)")
    finished_at = models.DateTimeField(null=True, blank=True)
    message = models.TextField(blank=True, help_text="what the job is doing, or why it failed")
    done = models.PositiveIntegerField(default=0, help_text="progress: units done")
    total = models.PositiveIntegerField(default=0, help_text="progress: units in all")

    class Meta:
        abstract = True

    @property
    def finished(self) -> bool:
        return self.status in FINAL


class WorkerBeat(models.Model):
    """A worker process's sign of life, written by its sweep step (``lesionsearch.jobs.worker``)
    at start-up and every ``JOB_SWEEP_SECONDS``; what the operations page and ``/metrics`` show.

    A worker is alive while its last beat is younger than ``worker_beat_timeout()`` and it has not
    said it stopped. What it runs now is read from the job rows it holds (their ``worker`` starts
    with its ``hostname``)."""

    name = models.CharField(max_length=255, unique=True, help_text="hostname:pid of the main process")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["hostname", "pid"]

    def __str__(self) -> str:
        return self.name
