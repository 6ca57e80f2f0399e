"""Index builds fanned out over the workers: every chunk a job of its own (IndexChunk), at most
INDEX_CHUNKS_IN_FLIGHT queued, each encoded once whatever the deliveries, taken over from a dead
worker, and the build assembled once by whichever run finds every chunk done."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from retrieval.models import Case, IndexChunk, IndexVersion
from retrieval.services import index as index_services
from retrieval.services.index import IndexBuildError, index_build_request, index_build_run, index_chunk_run

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _library_ids() -> list[int]:
    return sorted(Case.objects.exclude(split="test").values_list("id", flat=True))


def _unfinished(index_id: int) -> int:
    return IndexChunk.objects.filter(index_id=index_id, status__in=["pending", "running"]).count()


def test_chunks_run_as_separate_jobs_on_any_worker_and_the_last_sends_the_assembly(
        tiny_models, settings, sent_jobs, encoded, media_root):
    settings.INDEX_CHUNK_SIZE, settings.INDEX_CHUNKS_IN_FLIGHT = 8, 3
    index = index_build_request(model_version=tiny_models["4ch"])
    assert index_build_run(index_id=index.id, worker="w0")  # the plan, and the first chunks queued
    index.refresh_from_db()
    total = index.total
    assert total == len(_library_ids()) > 3 * 8  # more chunks than may be in flight
    assert index.status == "running" and index.heartbeat_at is None  # released: the chunks hold the work
    assert len(sent_jobs["index_chunk"]) == 3 == _unfinished(index.id)
    assert encoded == []  # the build's own run encodes nothing

    # Two workers take the queued messages as they come; each finished chunk queues the next one.
    queue, workers, progress = sent_jobs["index_chunk"], ["w1", "w2"], []
    while queue:
        chunk_id = queue.pop(0)
        assert index_chunk_run(chunk_id=chunk_id, worker=workers[chunk_id % 2])
        assert _unfinished(index.id) <= 3
        progress.append(IndexVersion.objects.get(id=index.id).done)
    assert progress == sorted(progress) and progress[-1] == total  # one done/total for the whole build
    chunks = list(IndexChunk.objects.filter(index_id=index.id).order_by("number"))
    assert [c.number for c in chunks] == list(range(-(-total // 8)))
    assert {c.worker for c in chunks} == {"w1", "w2"} and all(c.status == "done" for c in chunks)
    assert [(c.first, c.cases) for c in chunks] == [(8 * n, min(8, total - 8 * n)) for n in range(len(chunks))]
    assert sent_jobs["index_build"] == [index.id]  # the last chunk sent the assembly, once

    assert index_build_run(index_id=index.id, worker="w2")  # that message: assemble and activate
    index.refresh_from_db()
    assert index.status == "done" and index.active and index.done == index.total == index.size
    assert sorted(encoded) == _library_ids()  # every case encoded exactly once
    assert sorted(np.load(media_root / index.directory / "case_ids.npy").tolist()) == _library_ids()
    assert index_build_run(index_id=index.id, worker="w1") is False  # a duplicate of that message


def test_a_redelivered_chunk_is_not_encoded_again(tiny_models, settings, sent_jobs, encoded):
    settings.INDEX_CHUNK_SIZE, settings.INDEX_CHUNKS_IN_FLIGHT = 8, 2
    index = index_build_request(model_version=tiny_models["4ch"])
    index_build_run(index_id=index.id, worker="w0")
    first = sent_jobs["index_chunk"][0]
    assert index_chunk_run(chunk_id=first, worker="w1")
    assert index_chunk_run(chunk_id=first, worker="w2") is False  # the same message delivered twice
    assert index_chunk_run(chunk_id=first, worker="w1") is False
    assert len(encoded) == 8 and IndexChunk.objects.get(id=first).worker == "w1"


def test_a_chunk_whose_worker_died_is_taken_over_without_encoding_what_is_on_disk(
        tiny_models, settings, sent_jobs, encoded):
    settings.INDEX_CHUNK_SIZE, settings.INDEX_CHUNKS_IN_FLIGHT = 8, 2
    index = index_build_request(model_version=tiny_models["4ch"])
    index_build_run(index_id=index.id, worker="w0")
    first, second = sent_jobs["index_chunk"][:2]
    assert index_chunk_run(chunk_id=first, worker="w1")
    long_ago = timezone.now() - timedelta(seconds=settings.JOB_STALE_SECONDS * 2)
    # w1 wrote the first chunk's file and died before marking it done; w2 holds the second, alive.
    IndexChunk.objects.filter(id=first).update(status="running", worker="w1", heartbeat_at=long_ago)
    IndexChunk.objects.filter(id=second).update(status="running", worker="w2", heartbeat_at=timezone.now(),
                                                attempts=1)
    encoded.clear()
    assert index_chunk_run(chunk_id=second, worker="w3") is False  # a live holder keeps its chunk
    assert index_chunk_run(chunk_id=first, worker="w3")  # a dead one's is taken over...
    taken = IndexChunk.objects.get(id=first)
    assert (taken.status, taken.worker, taken.attempts) == ("done", "w3", 2)
    assert encoded == []  # ...and its file on disk is not encoded again


def test_a_chunk_that_cannot_be_encoded_fails_the_build_and_its_other_chunks(
        tiny_models, settings, sent_jobs, monkeypatch):
    settings.INDEX_CHUNK_SIZE, settings.INDEX_CHUNKS_IN_FLIGHT = 8, 3
    index = index_build_request(model_version=tiny_models["4ch"])
    index_build_run(index_id=index.id, worker="w0")

    def broken(*args, **kwargs):
        raise IndexBuildError("the library images are gone")

    monkeypatch.setattr(index_services, "encode_cases", broken)
    first, *others = sent_jobs["index_chunk"]
    assert index_chunk_run(chunk_id=first, worker="w1")
    failed = IndexVersion.objects.get(id=index.id)
    assert failed.status == "failed" and not failed.active
    assert failed.message == "Chunk 0 of the build failed: the library images are gone"
    assert set(IndexChunk.objects.filter(index_id=index.id).values_list("status", flat=True)) == {"failed"}
    assert all(index_chunk_run(chunk_id=chunk_id, worker="w2") is False for chunk_id in others)  # their messages


def test_a_lost_chunk_message_is_re_sent_by_the_sweep(tiny_models, settings, sent_jobs):
    from lesionsearch.jobs import services as jobs

    settings.INDEX_CHUNK_SIZE, settings.INDEX_CHUNKS_IN_FLIGHT = 8, 2
    index = index_build_request(model_version=tiny_models["4ch"])
    index_build_run(index_id=index.id, worker="w0")
    queued = list(sent_jobs["index_chunk"])
    # (sent_jobs records messages instead of sending them, so it does not note when: say it here)
    IndexChunk.objects.filter(index_id=index.id).update(enqueued_at=timezone.now())
    IndexVersion.objects.filter(id=index.id).update(enqueued_at=timezone.now())
    long_ago = timezone.now() - timedelta(seconds=settings.QUERY_PENDING_RESEND_SECONDS * 2)
    IndexChunk.objects.filter(id=queued[0]).update(enqueued_at=long_ago)  # its message never arrived
    jobs.sweep()
    jobs.sweep()  # every worker sweeps: one re-send per period all the same
    assert sent_jobs["index_chunk"] == queued + [queued[0]]  # re-sent once; the other is not due yet
    assert sent_jobs["index_build"] == []


def test_build_index_here_runs_the_chunks_in_its_own_process(tiny_models, settings, encoded):
    from tests.conftest import run_index_build_here

    settings.INDEX_CHUNK_SIZE = 8
    index = run_index_build_here(index_build_request(model_version=tiny_models["4ch"]), worker="here")
    assert index.status == "done" and sorted(encoded) == _library_ids()
    assert set(IndexChunk.objects.filter(index_id=index.id).values_list("worker", flat=True)) == {"here"}
