"""Queries and index builds through the configured broker and a real worker process.

On the embedded default: the filesystem broker and SQLite; in CI's services run: Redis and
PostgreSQL. The worker loads the models and the index from the shared media folder.
"""
from __future__ import annotations

import os
import subprocess
from urllib.parse import urlparse

import pytest
import redis
import redis.backoff
import redis.retry
from django.conf import settings

from retrieval.models import IndexChunk, IndexVersion, Query, QueryEvidence
from retrieval.services.index import index_build_request
from retrieval.services.queries import query_refresh, query_submit
from tests.conftest import kill_worker, start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _library_image(split: str = "test") -> bytes:
    from retrieval.models import Case

    return Case.objects.filter(split=split).order_by("id").first().image.read()


def _wait_final(query_id: int, timeout: float) -> Query:
    """Wait for DONE or FAILED reading the row only (no query_refresh: nothing here polls like a user)."""
    return wait_for(lambda: Query.objects.filter(id=query_id, status__in=["done", "failed"]).first(),
                    timeout=timeout, interval=0.2, what=f"query {query_id} to be answered")


def _queued_messages(client) -> int:
    """Messages waiting in Redis for the worker's queues (kombu keeps a list per queue and priority)."""
    return sum(client.llen(key) for key in client.scan_iter("inference*") if client.type(key) == b"list") + sum(
        client.llen(key) for key in client.scan_iter("light*") if client.type(key) == b"list")


def restart_redis(client) -> None:
    """Stop the Redis server without saving and start it again on the same port and folder, as
    scripts/with-services started it (no persistence): everything it held is gone."""
    port = client.connection_pool.connection_kwargs["port"]
    folder = client.config_get("dir")["dir"]
    logfile = client.config_get("logfile")["logfile"] or os.devnull
    try:
        client.shutdown(nosave=True)
    except redis.exceptions.ConnectionError:
        pass  # the server closes the connection as it exits
    wait_for(lambda: not _pings(client), timeout=10, interval=0.05, what="Redis to stop")
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                    "--daemonize", "yes", "--dir", folder, "--logfile", logfile], check=True)
    wait_for(lambda: _pings(client), timeout=10, interval=0.05, what="Redis to start again")


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def test_a_query_is_answered_by_the_worker(
        transactional_db, django_db_serialized_rollback, ready_index, clinician, celery_worker_process):
    query = query_submit(user=clinician, image_data=_library_image())  # autocommit: sent at once

    done = wait_for(lambda: Query.objects.filter(id=query.id, status__in=["done", "failed"]).first(), timeout=120,
                    what="the worker to answer the query")
    assert done.status == "done", done.message
    assert done.worker.startswith("test-")  # run by the worker process, not in this process
    assert list(done.neighbours.values_list("rank", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert done.saliency and done.neighbour_vote["label"] == "neighbour vote"
    # The second stage follows on the same worker: every neighbour's evidence map pair.
    pairs = wait_for(lambda: QueryEvidence.objects.filter(query_id=query.id, status__in=["done", "failed"]).first(),
                     timeout=60, what="the worker to compute the evidence pairs")
    assert pairs.status == "done" and pairs.worker.startswith("test-"), pairs.message
    assert not done.neighbours.filter(evidence_query="").exists()


def test_an_index_build_killed_with_its_worker_resumes_while_the_old_index_serves_queries(
        transactional_db, django_db_serialized_rollback, ready_index, tiny_models, media_root, settings, clinician):
    """kill -9 of the worker half-way through a rebuild: queries submitted meanwhile (before and
    after the kill) are answered from the old index, which stays active until the new one is
    complete; the build resumes on the next worker by itself (its sweeper: nobody polls here)."""
    old = ready_index
    env = {"INDEX_CHUNK_SIZE": "4", "JOB_STALE_SECONDS": "10", "JOB_SWEEP_SECONDS": "1"}
    log = media_root.parent / "worker.log"
    worker = start_worker(media_root, log=log, extra_env=env)
    try:
        index = index_build_request(model_version=tiny_models["4ch"])
        assert index.id != old.id
        wait_for(lambda: IndexVersion.objects.get(id=index.id).done >= 8, timeout=120, what="a few chunks")
        during = query_submit(user=clinician, image_data=_library_image())  # the new build is half done
        answered = _wait_final(during.id, timeout=120)
        building = IndexVersion.objects.get(id=index.id)
        assert answered.status == "done", answered.message
        assert answered.index_version_id == old.id
        assert building.status == "running" and building.done < building.total and not building.active
        assert IndexVersion.objects.get(id=old.id).active

        # Kill it while it holds a chunk (a chunk is a job of its own: RUNNING while a worker encodes it).
        wait_for(lambda: IndexChunk.objects.filter(index_id=index.id, status="running").exists(),
                 timeout=60, interval=0.05, what="the worker to claim the next chunk")
        kill_worker(worker)  # no warm shutdown: the chunk in hand is lost
        killed_at = IndexVersion.objects.get(id=index.id)
        assert killed_at.status == "running" and killed_at.done < killed_at.total
        assert IndexVersion.objects.get(id=old.id).active and not killed_at.active

        after_kill = query_submit(user=clinician, image_data=_library_image(), k=3)
        assert after_kill.index_version_id == old.id
        worker = start_worker(media_root, log=log, extra_env=env)
        answered_late = _wait_final(after_kill.id, timeout=120)
        finished = wait_for(lambda: IndexVersion.objects.filter(id=index.id, status__in=["done", "failed"]).first(),
                            timeout=240, interval=1, what="the build to resume and finish")
    finally:
        stop_worker(worker)
    assert answered_late.status == "done", answered_late.message
    assert answered_late.index_version_id == old.id and answered_late.finished_at < finished.finished_at
    assert finished.status == "done", finished.message
    assert finished.active and finished.size == finished.total and finished.attempts >= 1
    assert not IndexVersion.objects.get(id=old.id).active  # replaced only once complete
    import numpy as np

    ids = np.load(media_root / finished.directory / "case_ids.npy").tolist()
    assert len(ids) == len(set(ids)) == finished.total  # resumed, nothing encoded twice into the index


def test_a_worker_killed_mid_query_is_replaced_and_the_query_is_answered(
        transactional_db, django_db_serialized_rollback, ready_index, clinician, media_root):
    """kill -9 of the worker (main and pool processes) while it runs a query: after a restart the
    query is answered, by a second run, without anyone polling it (the worker's sweeper)."""
    env = {"JOB_STALE_SECONDS": "10", "JOB_SWEEP_SECONDS": "1"}
    log = media_root.parent / "worker.log"
    worker = start_worker(media_root, log=log, extra_env=env)
    try:
        query = query_submit(user=clinician, image_data=_library_image(), k=20)
        # A fresh worker's first query loads the models and the index (seconds): kill it in there.
        wait_for(lambda: Query.objects.filter(id=query.id, status="running").exists(), timeout=120,
                 interval=0.01, what="the worker to claim the query")
        kill_worker(worker)
        killed = Query.objects.get(id=query.id)
        assert killed.status == "running" and killed.attempts == 1 and not killed.neighbours.exists(), \
            "the query was not in progress when its worker was killed"

        worker = start_worker(media_root, log=log, extra_env=env)
        done = _wait_final(query.id, timeout=180)
    finally:
        stop_worker(worker)
    assert done.status == "done", done.message
    assert done.attempts == 2 and done.worker != killed.worker
    assert list(done.neighbours.values_list("rank", flat=True)) == list(range(1, 21))


def test_a_worker_killed_during_the_second_stage_is_replaced_and_the_pairs_are_computed(
        transactional_db, django_db_serialized_rollback, ready_index, clinician, media_root):
    """kill -9 of the worker while it renders a done query's evidence pairs: the query keeps its
    neighbours throughout, and after a restart the pairs are computed by a second run (the
    sweeper takes the stale job over; nobody polls)."""
    env = {"JOB_STALE_SECONDS": "10", "JOB_SWEEP_SECONDS": "1"}
    log = media_root.parent / "worker.log"
    worker = start_worker(media_root, log=log, extra_env=env)
    try:
        query = query_submit(user=clinician, image_data=_library_image(), k=20)  # 20 pairs: a second stage to catch
        wait_for(lambda: QueryEvidence.objects.filter(query_id=query.id, status="running").exists(), timeout=180,
                 interval=0.005, what="the worker to start the second stage")
        kill_worker(worker)
        killed = QueryEvidence.objects.get(query_id=query.id)
        assert killed.status == "running" and killed.attempts == 1, "the second stage was not in progress"
        answered = Query.objects.get(id=query.id)
        assert answered.status == "done" and answered.neighbours.count() == 20

        worker = start_worker(media_root, log=log, extra_env=env)
        pairs = wait_for(lambda: QueryEvidence.objects.filter(id=killed.id, status__in=["done", "failed"]).first(),
                         timeout=180, interval=0.2, what="the second stage to be taken over and finished")
    finally:
        stop_worker(worker)
    assert pairs.status == "done" and pairs.attempts == 2 and pairs.worker != killed.worker, pairs.message
    rows = Query.objects.get(id=query.id).neighbours.all()
    assert rows.count() == 20 and not rows.filter(evidence_query="").exists()
    assert all((media_root / row.evidence_query).exists() and (media_root / row.evidence_case).exists() for row in rows)


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis://"),
                    reason="needs the Redis broker (make test-services)")  # checked before the fixtures run
def test_queries_queued_when_redis_restarts_are_all_answered(
        transactional_db, django_db_serialized_rollback, ready_index, tiny_models, clinician, media_root, settings):
    """Redis restarts without persistence (as CI's and a cache-like deployment's do) while queries
    wait behind a long job: their messages are gone; the worker's sweeper re-sends them from the
    database and every one is answered exactly once."""
    broker = urlparse(settings.CELERY_BROKER_URL)
    # No retries: redis-py retries a failed command with back-off by default, which made each ping of
    # the stopped server take seconds, and the restart longer than the rebuild it must overlap.
    client = redis.Redis(host=broker.hostname, port=broker.port, socket_timeout=5,
                         retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
    env = {"INDEX_CHUNK_SIZE": "64", "QUERY_PENDING_RESEND_SECONDS": "5", "JOB_SWEEP_SECONDS": "1"}
    worker = start_worker(media_root, log=media_root.parent / "worker.log", extra_env=env)
    try:
        submitted = 0
        for _ in range(3):  # the tiny rebuild takes a few seconds: now and then it ends before the restart
            # A rebuild in one long chunk keeps the only worker process busy for a while.
            build = index_build_request(model_version=tiny_models["4ch"])
            wait_for(lambda: IndexVersion.objects.filter(id=build.id, status="running").exists(), timeout=60,
                     interval=0.05, what="the worker to start the rebuild")
            queries = [query_submit(user=clinician, image_data=_library_image(), k=6) for _ in range(4)]
            submitted += len(queries)
            queued = _queued_messages(client)
            restart_redis(client)
            if IndexVersion.objects.get(id=build.id).status == "running":
                break
            # Inconclusive: the worker was free before Redis restarted. Let it answer these, and try again.
            for query in queries:
                _wait_final(query.id, timeout=120)
        else:
            last = IndexVersion.objects.get(id=build.id)
            pytest.fail(f"the worker finished the rebuild before Redis restarted, three times: inconclusive "
                        f"(last: {last.status}, {last.message!r}, {last.started_at} -> {last.finished_at})")
        assert queued >= len(queries), f"only {queued} message(s) were waiting in Redis"
        assert _queued_messages(client) == 0  # the restart lost them

        answered = [_wait_final(query.id, timeout=120) for query in queries]
        built = wait_for(lambda: IndexVersion.objects.filter(id=build.id, status__in=["done", "failed"]).first(),
                         timeout=180, interval=0.5, what="the rebuild to finish")
    finally:
        stop_worker(worker)
    assert [q.status for q in answered] == ["done"] * 4, [q.message for q in answered]
    assert [q.attempts for q in answered] == [1] * 4  # re-sent, never run twice
    assert Query.objects.filter(user=clinician).count() == submitted
    for query in answered:
        assert list(query.neighbours.values_list("rank", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert built.status == "done", built.message


def test_a_query_lost_with_its_worker_is_rerun_by_the_next_worker(
        transactional_db, django_db_serialized_rollback, ready_index, clinician, media_root, settings):
    """A query claimed by a worker that dies is retried when polled after its heartbeat goes stale."""
    from datetime import timedelta

    from django.utils import timezone

    query = query_submit(user=clinician, image_data=_library_image())
    # As if a worker had claimed it and died before answering (its message is gone with it).
    Query.objects.filter(id=query.id).update(status="running", worker="dead@host:1", attempts=1,
                                             heartbeat_at=timezone.now() - timedelta(hours=1),
                                             enqueued_at=timezone.now() - timedelta(hours=1))
    worker = start_worker(media_root, log=media_root.parent / "worker.log")
    try:
        done = wait_for(lambda: (lambda q: q if q.status in ("done", "failed") else None)(
            query_refresh(query=Query.objects.get(id=query.id))), timeout=120, interval=0.5,
            what="the stale query to be re-run")
    finally:
        stop_worker(worker)
    assert done.status == "done" and done.attempts == 2 and done.worker.startswith("test-")
