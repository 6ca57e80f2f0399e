"""Job wake-ups (lesionsearch.jobs.notify): a reader waiting on a job learns it finished within
milliseconds of the commit, without polling the database; on the embedded default (named
pipes) here, on Redis in the services run."""
from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.db import transaction

from lesionsearch.jobs import notify
from lesionsearch.jobs import services as jobs
from retrieval.models import Query
from retrieval.services.polling import query_wait
from retrieval.tasks import QUERY


def _later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


def _wakes_within(watch, kind: str, delay: float = 0.2) -> float:
    thread = _later(delay, lambda: notify.notify(kind))
    started = time.monotonic()
    assert watch.wait(5) is True
    thread.join()
    return time.monotonic() - started - delay


def _check_transport() -> None:
    with notify.watch(["query", "query_evidence"]) as watch:
        assert watch.wait(0.05) is False  # nothing finished yet
        assert _wakes_within(watch, "query") < 0.05
        assert _wakes_within(watch, "query_evidence") < 0.05
        assert watch.wait(0.05) is False  # each wake-up is seen once
    with notify.watch(["index_build"]) as other:
        notify.notify("query")
        assert other.wait(0.1) is False  # only the kinds watched


def test_a_named_pipe_wakes_a_watch_within_milliseconds(settings, tmp_path):
    if settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("the services run uses Redis pub/sub (the next test)")
    settings.JOB_NOTIFY_DIR = tmp_path / "notify"
    _check_transport()


@pytest.mark.services
@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis://"), reason="needs the Redis broker "
                                                                                   "(make test-services)")
def test_redis_pub_sub_wakes_a_watch_within_milliseconds():
    _check_transport()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_long_poll_learns_of_done_from_the_commit_not_from_its_recheck(clinician, settings, tmp_path):
    """A query finished by a worker (jobs.finish, committed) wakes query_wait long before its
    RECHECK_SECONDS re-read would have seen it."""
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        settings.JOB_NOTIFY_DIR = tmp_path / "notify"
    query = Query.objects.create(user=clinician, image="queries/x.jpg", sha256="0" * 64, width=4, height=4,
                                 status="running", worker="w", attempts=1)
    Query.objects.filter(id=query.id).update(heartbeat_at=query.created_at)
    finished_at = {}

    def finish():
        with transaction.atomic():
            assert jobs.finish(QUERY, query.id, "w", message="")
        finished_at["t"] = time.monotonic()

    thread = _later(0.2, finish)
    answered = query_wait(query=query, timeout=5)
    returned = time.monotonic()
    thread.join()
    assert answered.status == "done"
    assert returned - finished_at["t"] < min(0.1, notify.RECHECK_SECONDS / 2)
