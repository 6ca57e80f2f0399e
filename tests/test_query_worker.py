"""Queries and index builds through the configured broker and a real worker process.

On the embedded default: the filesystem broker and SQLite; in CI's services run: Redis and
PostgreSQL. The worker loads the models and the index from the shared media folder.
"""
from __future__ import annotations

import os
import signal

import pytest

from retrieval.models import IndexVersion, Query
from retrieval.services.index import index_build_request, index_refresh
from retrieval.services.queries import query_refresh, query_submit
from tests.conftest import start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _library_image(split: str = "test") -> bytes:
    from retrieval.models import Case

    return Case.objects.filter(split=split).order_by("id").first().image.read()


def test_a_query_is_answered_by_the_worker(transactional_db, ready_index, clinician, celery_worker_process):
    query = query_submit(user=clinician, image_data=_library_image())  # autocommit: sent at once

    done = wait_for(lambda: Query.objects.filter(id=query.id, status__in=["done", "failed"]).first(), timeout=120,
                    what="the worker to answer the query")
    assert done.status == "done", done.error
    assert done.worker.startswith("test-")  # run by the worker process, not in this process
    assert list(done.neighbours.values_list("rank", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert done.saliency and done.neighbour_vote["label"] == "neighbour vote"


def test_an_index_build_killed_with_its_worker_resumes_on_a_new_worker(transactional_db, tiny_models, media_root,
                                                                       settings, clinician):
    settings.JOB_STALE_SECONDS = 10
    env = {"INDEX_CHUNK_SIZE": "4", "JOB_STALE_SECONDS": "10"}
    log = media_root.parent / "worker.log"
    worker = start_worker(media_root, log=log, extra_env=env)
    try:
        index = index_build_request(model_version=tiny_models["4ch"])
        wait_for(lambda: IndexVersion.objects.get(id=index.id).done >= 12, timeout=120, what="a few chunks")
        os.kill(worker.pid, signal.SIGKILL)  # no warm shutdown: the chunk in hand is lost
        worker.wait()
        killed_at = IndexVersion.objects.get(id=index.id)
        assert killed_at.status == "running" and killed_at.done < killed_at.total

        worker = start_worker(media_root, log=log, extra_env=env)
        # Nobody holds the build any more; the next status read (admin, API) notices and re-sends it.
        finished = wait_for(lambda: (lambda i: i if i.status in ("done", "failed") else None)(
            index_refresh(index=IndexVersion.objects.get(id=index.id))), timeout=180, interval=1,
            what="the build to resume and finish")
    finally:
        stop_worker(worker)
    assert finished.status == "done", finished.message
    assert finished.active and finished.size == finished.total
    import numpy as np

    ids = np.load(media_root / finished.directory / "case_ids.npy").tolist()
    assert len(ids) == len(set(ids)) == finished.total  # resumed, nothing encoded twice into the index


def test_a_query_lost_with_its_worker_is_rerun_by_the_next_worker(transactional_db, ready_index, clinician,
                                                                  media_root, settings):
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
