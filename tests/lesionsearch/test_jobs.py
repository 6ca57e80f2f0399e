"""The job framework (lesionsearch.jobs) on a real job table: claims, takeovers, holders-only
writes, retry limits, re-sending and the sweep. Each job kind (query, index build, study
preparation, library check) has its own tests of what it does with it; the real-worker tests
(tests/test_query_worker.py, services) kill workers and restart Redis around it."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from lesionsearch.jobs import services as jobs
from lesionsearch.jobs.kinds import JobKind, kind_of, register, registered
from retrieval.models import LibraryCheck

pytestmark = pytest.mark.django_db


class FakeTask:
    """Records the job ids a kind's task was sent."""

    def __init__(self):
        self.sent: list[int] = []

    def delay(self, job_id: int) -> None:
        self.sent.append(job_id)


@pytest.fixture
def task():
    return FakeTask()


@pytest.fixture
def kind(task):
    failed = []
    return JobKind(name="test_check", model=LibraryCheck, task=task, interrupted="interrupted too often",
                   never_picked_up="nobody came", fail_unclaimed_after=lambda: 600,
                   on_fail=lambda job_id, message: failed.append((job_id, message))), failed


def job(**fields) -> LibraryCheck:
    return LibraryCheck.objects.create(collection="c", **fields)


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def test_of_two_deliveries_exactly_one_claims(kind):
    kind, _ = kind
    check = job()
    first, second = jobs.claim(kind, check.id, "w1"), jobs.claim(kind, check.id, "w2")
    assert first is not None and second is None
    check.refresh_from_db()
    assert (check.status, check.worker, check.attempts) == ("running", "w1", 1)
    assert check.started_at is not None and check.heartbeat_at is not None


def test_only_the_holder_writes_heartbeats_progress_and_the_result(kind):
    kind, _ = kind
    check = job()
    jobs.claim(kind, check.id, "w1")
    assert not jobs.heartbeat(kind, check.id, "w2") and not jobs.progress(kind, check.id, "w2", done=5)
    assert not jobs.finish(kind, check.id, "w2", message="not mine")
    assert not jobs.fail(kind, check.id, "not mine either", worker="w2")
    assert jobs.progress(kind, check.id, "w1", done=3, total=9, message="3 of 9")
    check.refresh_from_db()
    assert (check.done, check.total, check.message, check.status) == (3, 9, "3 of 9", "running")
    assert jobs.finish(kind, check.id, "w1", message="all done", problems=[{"case": 1}])
    check.refresh_from_db()
    assert (check.status, check.message, check.problems, check.heartbeat_at) == ("done", "all done", [{"case": 1}], None)
    assert check.finished_at is not None
    assert jobs.claim(kind, check.id, "w3") is None  # finished for good
    assert not jobs.fail(kind, check.id, "too late")


def test_a_dead_workers_job_is_taken_over_and_the_dead_worker_cannot_write(kind, settings):
    kind, _ = kind
    check = job()
    jobs.claim(kind, check.id, "dead")
    assert jobs.claim(kind, check.id, "w2") is None  # its heartbeat is fresh
    LibraryCheck.objects.filter(id=check.id).update(heartbeat_at=ago(settings.JOB_STALE_SECONDS + 1))
    taken = jobs.claim(kind, check.id, "w2")
    assert (taken.worker, taken.attempts) == ("w2", 2)
    assert not jobs.finish(kind, check.id, "dead")  # the old holder comes back: its result is refused
    assert jobs.finish(kind, check.id, "w2")


def test_after_the_last_attempt_no_claim_and_refresh_fails_it(kind, settings):
    kind, failed = kind
    check = job(status="running", worker="dead", attempts=settings.JOB_MAX_ATTEMPTS,
                heartbeat_at=ago(settings.JOB_STALE_SECONDS + 1), enqueued_at=ago(settings.JOB_STALE_SECONDS + 1))
    assert jobs.claim(kind, check.id, "w2") is None
    refreshed = jobs.refresh(kind, check)
    assert (refreshed.status, refreshed.message) == ("failed", "interrupted too often")
    assert failed == [(check.id, "interrupted too often")]  # the kind's own bookkeeping ran


def test_refresh_resends_a_lost_message_once_per_period_and_fails_what_nobody_claims(kind, task, settings):
    kind, failed = kind
    fresh = job(enqueued_at=timezone.now())
    assert jobs.refresh(kind, fresh) == fresh and task.sent == []  # nothing due: no update, only the re-read
    # A poll loop passes the row it read last time: what the worker wrote since must show.
    type(fresh).objects.filter(id=fresh.id).update(status="done")
    assert jobs.refresh(kind, fresh).status == "done"
    type(fresh).objects.filter(id=fresh.id).update(status="pending")
    lost = job(enqueued_at=ago(settings.QUERY_PENDING_RESEND_SECONDS + 1))
    jobs.refresh(kind, lost)
    jobs.refresh(kind, LibraryCheck.objects.get(id=lost.id))
    assert task.sent == [lost.id]  # re-sent once, then it counts as sent again
    abandoned = job()
    LibraryCheck.objects.filter(id=abandoned.id).update(created_at=ago(601))
    refreshed = jobs.refresh(kind, LibraryCheck.objects.get(id=abandoned.id))
    assert (refreshed.status, refreshed.message) == ("failed", "nobody came")
    dead = job(status="running", worker="dead", attempts=1, heartbeat_at=ago(settings.JOB_STALE_SECONDS + 1),
               enqueued_at=ago(settings.JOB_STALE_SECONDS + 1))
    for _ in range(3):
        jobs.refresh(kind, LibraryCheck.objects.get(id=dead.id))
    assert task.sent == [lost.id, dead.id]  # once per stale period, not on every sweep
    assert failed == [(abandoned.id, "nobody came")]


def test_a_chunked_job_continues_between_runs_without_counting_attempts(kind, task, settings):
    kind, _ = kind
    chunked = dataclasses.replace(kind, chunked=True)
    check = job()
    jobs.claim(chunked, check.id, "w1")
    assert jobs.release(chunked, check.id, "w1")
    check.refresh_from_db()
    assert (check.status, check.heartbeat_at) == ("running", None)
    again = jobs.claim(chunked, check.id, "w2")  # the next chunk, any worker
    assert (again.worker, again.attempts) == ("w2", 1)
    assert jobs.claim(kind, check.id, "w3") is None  # a kind that is not chunked: a held job is held
    jobs.release(chunked, check.id, "w2")
    LibraryCheck.objects.filter(id=check.id).update(enqueued_at=ago(settings.QUERY_PENDING_RESEND_SECONDS + 1))
    jobs.refresh(chunked, LibraryCheck.objects.get(id=check.id))
    assert task.sent == [check.id]  # between chunks with its message lost: re-sent


def test_enqueue_on_commit_sends_after_the_commit_only(kind, task, django_capture_on_commit_callbacks):
    kind, _ = kind
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            check = job()
            jobs.enqueue_on_commit(kind, check.id)
            assert task.sent == []
    assert task.sent == [check.id]
    check.refresh_from_db()
    assert check.enqueued_at is not None


def test_a_broker_that_is_down_is_logged_and_left_to_the_sweep(kind, caplog):
    kind, _ = kind

    class Down:
        def delay(self, job_id):
            raise ConnectionError("broker down")

    check = job()
    jobs.send(dataclasses.replace(kind, task=Down()), check.id)
    assert "it will be re-sent" in caplog.text
    check.refresh_from_db()
    assert check.enqueued_at is not None and check.status == "pending"


def test_the_sweep_refreshes_every_unfinished_job_of_every_registered_kind(kind, task, monkeypatch):
    from lesionsearch.jobs import kinds

    kind, _ = kind
    monkeypatch.setattr(kinds, "REGISTRY", {})  # only this kind, so nothing reaches a real broker
    register(kind)
    assert registered() == [kind] and kind_of(LibraryCheck) is kind
    pending, _running = job(), job(status="running", worker="w", heartbeat_at=timezone.now())
    job(status="done")
    job(status="failed")
    assert jobs.sweep() == 2  # the unfinished ones
    assert task.sent == [pending.id]  # the running one is alive: left alone


def test_the_apps_register_every_job_model():
    from readerstudy.models import StudyPreparation
    from retrieval.models import IndexChunk, IndexVersion, Query, QueryEvidence, TrainingJob

    names = {kind.name: kind.model for kind in registered()}
    assert names == {"query": Query, "query_evidence": QueryEvidence, "index_build": IndexVersion,
                     "index_chunk": IndexChunk, "library_check": LibraryCheck,
                     "study_preparation": StudyPreparation, "training": TrainingJob}


def test_a_short_run_writes_no_heartbeat_and_a_long_one_beats_every_tenth_of_the_stale_time(kind, settings,
                                                                                           monkeypatch):
    kind, _ = kind
    settings.JOB_STALE_SECONDS = 100  # a beat is due every 10 s
    clock = [1000.0]
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock[0])
    check = job()
    jobs.claim(kind, check.id, "w1")
    claimed = LibraryCheck.objects.get(id=check.id).heartbeat_at
    beats = jobs.Beats(kind, check.id, "w1")
    clock[0] += 9.9
    beats.beat()  # 9.9 s after the claim (its own heartbeat): nothing written
    assert LibraryCheck.objects.get(id=check.id).heartbeat_at == claimed
    clock[0] += 0.1
    beats.beat()  # 10 s: due
    first = LibraryCheck.objects.get(id=check.id).heartbeat_at
    assert first > claimed
    clock[0] += 5
    beats.beat()  # 5 s after that beat: not yet
    assert LibraryCheck.objects.get(id=check.id).heartbeat_at == first
    clock[0] += 5
    beats.beat()
    assert LibraryCheck.objects.get(id=check.id).heartbeat_at > first
