"""The worker's periodic sweep of unfinished jobs (lesionsearch.jobs.worker.JobSweeper): lost broker
messages and dead workers are noticed without anyone reading the job. The real-service tests in
tests/test_query_worker.py show it end to end (kill -9, Redis restart)."""
from __future__ import annotations

import os
from datetime import timedelta
from time import monotonic

from django.utils import timezone
from kombu.asynchronous.timer import Timer

from lesionsearch.celery import app
from lesionsearch.jobs.worker import JobSweeper, sweep_unfinished_jobs
from lesionsearch.jobs import services as jobs
from lesionsearch.jobs.models import WorkerBeat
from retrieval.models import IndexVersion
from retrieval.services.index import index_build_request, index_refresh


def test_every_worker_runs_the_sweeper_on_its_timer(tiny_models, settings, sent_jobs):
    assert JobSweeper in app.steps["worker"]
    sent = sent_jobs["index_build"]
    settings.JOB_SWEEP_SECONDS = 7
    build = index_build_request(model_version=tiny_models["4ch"])  # its message was never sent (no commit here)

    gone = WorkerBeat.objects.create(name="w0@test:1", hostname="w0@test", pid=1, started_at=timezone.now(),
                                     beat_at=timezone.now() - timedelta(days=2))  # a worker gone for two days
    worker = type("Worker", (), {"timer": Timer(), "hostname": "w1@test", "app": app})()
    step = JobSweeper(worker)
    step.start(worker)
    try:
        (scheduled,) = worker.timer.queue
        beat = WorkerBeat.objects.get()  # the worker says it is alive as it starts (and forgets the long gone)
        assert beat.name != gone.name
        assert (beat.hostname, beat.pid, beat.stopped_at) == ("w1@test", os.getpid(), None)
        assert settings.CELERY_QUEUE_LIGHT in beat.queues  # what this process's app consumes (a real one: test_worker)
        assert scheduled.entry.fun.__name__ == "beat_and_sweep"
        assert 6 < scheduled.eta - monotonic() <= 7
        scheduled.entry()  # what the worker's event loop does every JOB_SWEEP_SECONDS
        assert WorkerBeat.objects.get().beat_at > beat.beat_at  # beat again, and swept
    finally:
        step.stop(worker)
    assert sent == [build.id]
    assert WorkerBeat.objects.get().stopped_at is not None  # a warm shutdown says so
    assert scheduled.entry.canceled


def test_a_sweep_that_fails_does_not_stop_the_worker(tiny_models, monkeypatch, sent_jobs):
    index_build_request(model_version=tiny_models["4ch"])  # one unfinished job: a working sweep counts it
    assert sweep_unfinished_jobs() == 1
    calls = []

    def broken():
        calls.append(True)
        raise ConnectionError("database down")

    monkeypatch.setattr(jobs, "sweep", broken)
    assert sweep_unfinished_jobs() == 0 and calls == [True]  # the broken sweep ran, and was contained


def test_a_dead_workers_build_is_re_sent_once_per_stale_period(tiny_models, settings, sent_jobs):
    """Every worker's sweeper refreshes every build; one message per stale period is enough (each
    message would start one more chain of chunk tasks)."""
    sent = sent_jobs["index_build"]
    build = index_build_request(model_version=tiny_models["4ch"])
    long_ago = timezone.now() - timedelta(seconds=settings.JOB_STALE_SECONDS * 2)
    IndexVersion.objects.filter(id=build.id).update(status="running", worker="dead", heartbeat_at=long_ago,
                                                    enqueued_at=long_ago)
    for _ in range(3):
        index_refresh(index=build)
    assert sent == [build.id]
    IndexVersion.objects.filter(id=build.id).update(enqueued_at=long_ago)  # a stale period later, still dead
    index_refresh(index=build)
    assert sent == [build.id, build.id]
