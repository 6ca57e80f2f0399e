"""A query's second stage (retrieval.services.evidence): the neighbours first, their evidence map
pairs after, as a job of its own (redelivery-safe, taken over from a dead worker, never stuck),
on a real tiny index. The killed-worker case with a real worker process: tests/test_query_worker.py."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from retrieval import runtime
from retrieval.ml.measures import activation_map_pair, normalise_map
from retrieval.ml.overlay import EVIDENCE_MAX_SIDE, render_overlay
from retrieval.models import Case, Query, QueryEvidence, QueryNeighbour
from retrieval.selectors import query_payload
from retrieval.services import evidence
from retrieval.services.evidence import CASE_UNREADABLE, evidence_run
from retrieval.services.polling import query_wait
from retrieval.services.queries import query_delete, query_refresh, query_run, query_submit

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _first_stage(user, k: int = 6) -> Query:
    case = Case.objects.filter(split="test").order_by("id").first()
    query = query_submit(user=user, image_data=case.image.read(), filename="lesion.jpg", k=k)
    assert query_run(query_id=query.id, worker="w") is True
    return Query.objects.get(id=query.id)


def _states(query: Query) -> list[str]:
    return [n["evidence"]["status"] for n in query_payload(Query.objects.get(id=query.id))["neighbours"]]


def test_the_query_is_done_with_its_neighbours_before_its_evidence_pairs(ready_index, clinician, sent_jobs,
                                                                         media_root):
    query = _first_stage(clinician)
    assert query.status == "done" and query.neighbours.count() == 6 and query.saliency and query.neighbour_vote
    job = query.evidence_job
    assert job.status == "pending" and job.total == 6
    assert _states(query) == ["pending"] * 6
    assert not QueryNeighbour.objects.exclude(evidence_query="").exists()  # nothing of the second stage yet

    # The first stage kept the query's saliency map at the index's precision for the SE-CBIR pairs.
    encoder = runtime.descriptor_encoder_for(ready_index)
    with default_storage.open(job.saliency_map, "rb") as handle:
        stored = np.load(handle)
    from retrieval import loaders

    pixels = loaders.load_rgb(query.image.path)
    fresh = encoder.encode([pixels], needs={"secbir"}, packed_masks=False).secbir.saliency[0]
    assert stored.dtype == np.uint8 and np.abs(stored.astype(int) - np.rint(fresh * 255)).max() <= 1

    assert evidence_run(evidence_id=job.id, worker="e") is True
    assert evidence_run(evidence_id=job.id, worker="e") is False  # a redelivered message does nothing
    job.refresh_from_db()
    assert job.status == "done" and job.done == 6 and job.attempts == 1
    assert _states(query) == ["ready"] * 6

    # Each pair is paper 004's activation map pair of the 4-channel network's feature maps
    # (image + saliency), rendered at the image's aspect ratio.
    loaded = runtime.loaded_index(ready_index)
    rows = list(query.neighbours.select_related("case").order_by("rank"))
    side = encoder.size  # the second stage decodes at the network's input size (JPEG draft)
    images = [loaders.load_rgb(path, at_least=side) for path in [query.image.path] + [r.case.image.path for r in rows]]
    maps = np.stack([stored] + [loaded.saliency[loaded.row_of(row.case_id)] for row in rows]) / 255.0
    g = encoder.feature_maps("secbir", images, maps.astype(np.float32))
    for position, row in enumerate(rows, start=1):
        a_q, a_r = activation_map_pair(g[0], g[position])
        assert (media_root / row.evidence_query).read_bytes() == render_overlay(
            normalise_map(a_q), (query.width, query.height), EVIDENCE_MAX_SIDE)
        with Image.open(media_root / row.evidence_case) as overlay:
            assert overlay.has_transparency_data and max(overlay.size) == min(EVIDENCE_MAX_SIDE, max(row.case.width,
                                                                                              row.case.height))
            assert abs(overlay.width / overlay.height - row.case.width / row.case.height) < 0.02


def test_the_long_poll_waits_for_done_or_for_the_evidence_too(ready_index, clinician, sent_jobs):
    query = _first_stage(clinician)
    started = timezone.now()
    assert query_wait(query=query, timeout=0.3).status == "done"  # done already: no wait
    assert (timezone.now() - started).total_seconds() < 0.25
    waited = query_wait(query=query, timeout=0.3, until="evidence")  # the pairs are not there: waits it out
    assert (timezone.now() - started).total_seconds() >= 0.3 and not waited.evidence_job.finished
    evidence_run(evidence_id=query.evidence_job.id, worker="e")
    assert query_wait(query=query, timeout=5, until="evidence").evidence_job.status == "done"
    with pytest.raises(ValueError, match="until"):
        query_wait(query=query, timeout=1, until="vote")


def test_a_neighbour_whose_library_image_is_unreadable_fails_alone(ready_index, clinician, sent_jobs, media_root):
    query = _first_stage(clinician)
    broken = query.neighbours.order_by("rank")[2].case
    (media_root / broken.image.name).write_bytes(b"not an image any more")
    evidence_run(evidence_id=query.evidence_job.id, worker="e")
    payload = query_payload(Query.objects.get(id=query.id))
    states = {n["rank"]: n["evidence"] for n in payload["neighbours"]}
    assert states[3] == {"status": "failed", "query_map_url": None, "case_map_url": None, "message": CASE_UNREADABLE}
    assert [states[rank]["status"] for rank in (1, 2, 4, 5, 6)] == ["ready"] * 5
    assert QueryEvidence.objects.get(query=query).status == "done"


def test_an_internal_error_fails_the_pairs_with_a_message_and_keeps_the_neighbours(ready_index, clinician, sent_jobs,
                                                                                  monkeypatch, media_root):
    query = _first_stage(clinician)

    def broken(job, written):
        written.append(default_storage.save("queries/partial.png", ContentFile(b"half")))
        raise RuntimeError("the network broke")

    monkeypatch.setattr(evidence, "pairs_compute", broken)
    assert evidence_run(evidence_id=query.evidence_job.id, worker="e") is True
    payload = query_payload(Query.objects.get(id=query.id))
    assert payload["status"] == "done" and len(payload["neighbours"]) == 6 and payload["neighbour_vote"]
    messages = {n["evidence"]["message"] for n in payload["neighbours"]}
    assert {n["evidence"]["status"] for n in payload["neighbours"]} == {"failed"}
    assert messages == {evidence.EVIDENCE_FAILED.format(id=query.id)}
    assert "not affected" in messages.pop() and not default_storage.exists("queries/partial.png")


def test_a_second_stage_held_by_a_dead_worker_is_resent_then_taken_over(ready_index, clinician, sent_jobs):
    query = _first_stage(clinician)
    job = query.evidence_job
    long_ago = timezone.now() - timedelta(hours=1)
    QueryEvidence.objects.filter(id=job.id).update(status="running", worker="dead", attempts=1,
                                                   heartbeat_at=long_ago, enqueued_at=long_ago)
    sent_jobs["query_evidence"].clear()
    assert evidence_run(evidence_id=job.id, worker="alive") is True  # a stale holder is taken over
    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 2 and job.worker == "alive"

    # And the read path notices a lost message: the page's or API's poll re-sends it once.
    again = _first_stage(clinician)
    QueryEvidence.objects.filter(query=again).update(enqueued_at=long_ago)
    sent_jobs["query_evidence"].clear()
    query_refresh(query=again)
    query_refresh(query=Query.objects.get(id=again.id))
    assert sent_jobs["query_evidence"] == [again.evidence_job.id]


def test_a_slow_workers_late_pairs_are_discarded_and_leave_no_files(ready_index, clinician, sent_jobs, monkeypatch,
                                                                    media_root):
    query = _first_stage(clinician)
    real = evidence.pairs_compute

    def overtaken(job, written):
        result = real(job, written)
        QueryEvidence.objects.filter(id=job.id).update(worker="other")  # taken over while we computed
        return result

    monkeypatch.setattr(evidence, "pairs_compute", overtaken)
    evidence_run(evidence_id=query.evidence_job.id, worker="slow")
    assert _states(query) == ["pending"] * 6
    assert not list((media_root / "queries").rglob("*-evidence-*.png"))


def test_a_query_deleted_during_its_second_stage_leaves_nothing(ready_index, clinician, sent_jobs, monkeypatch,
                                                                media_root, django_capture_on_commit_callbacks):
    query = _first_stage(clinician)
    real = evidence.pairs_compute

    def deleted_meanwhile(job, written):
        result = real(job, written)
        with django_capture_on_commit_callbacks(execute=True):
            query_delete(query=Query.objects.get(id=job.query_id), user=clinician)
        return result

    monkeypatch.setattr(evidence, "pairs_compute", deleted_meanwhile)
    job_id = query.evidence_job.id
    assert evidence_run(evidence_id=job_id, worker="e") is True
    assert not Query.objects.filter(id=query.id).exists() and not QueryEvidence.objects.filter(id=job_id).exists()
    assert not [p for p in (media_root / "queries").rglob("*") if p.is_file()]


def test_delete_removes_the_pairs_and_the_saliency_map(ready_index, clinician, sent_jobs, media_root,
                                                       django_capture_on_commit_callbacks):
    query = _first_stage(clinician)
    evidence_run(evidence_id=query.evidence_job.id, worker="e")
    own = [query.evidence_job.saliency_map] + [name for pair in query.neighbours.values_list(
        "evidence_query", "evidence_case") for name in pair]
    assert len(own) == 13 and all(default_storage.exists(name) for name in own)
    with django_capture_on_commit_callbacks(execute=True):
        query_delete(query=query, user=clinician)
    assert not any(default_storage.exists(name) for name in own)


def test_without_evidence_maps_there_is_no_second_stage(ready_index, clinician, sent_jobs, settings):
    settings.QUERY_EVIDENCE_MAPS = False
    query = _first_stage(clinician)
    assert not QueryEvidence.objects.filter(query=query).exists()
    payload = query_payload(query)
    assert payload["status"] == "done" and [n["evidence"] for n in payload["neighbours"]] == [None] * 6


def test_the_api_serves_each_pairs_state_and_waits_for_the_pairs_on_request(ready_index, clinician, sent_jobs):
    from rest_framework.test import APIClient

    from tests.apiclient import api

    client = api(clinician)
    query = _first_stage(clinician)
    url = f"/api/v1/queries/{query.id}/"
    pending = client.get(url, {"wait": 0.2, "until": "evidence"}).json()  # waits 0.2 s: the pairs are pending
    assert pending["status"] == "done" and {n["evidence"]["status"] for n in pending["neighbours"]} == {"pending"}
    evidence_run(evidence_id=query.evidence_job.id, worker="e")
    ready = client.get(url, {"wait": 5, "until": "evidence"}).json()
    assert {n["evidence"]["status"] for n in ready["neighbours"]} == {"ready"}
    for neighbour in ready["neighbours"]:
        assert client.get(neighbour["evidence"]["query_map_url"]).status_code == 200
        assert APIClient().get(neighbour["evidence"]["case_map_url"]).status_code in (302, 401, 403, 404)

    bad = client.get(url, {"wait": 1, "until": "vote"})
    assert bad.status_code == 400 and "until" in bad.json()["error"]["fields"]
    schema = APIClient().get("/api/v1/schema/", {"format": "json"}).json()
    documented = schema["components"]["schemas"]["Evidence"]
    assert set(documented["properties"]) == set(ready["neighbours"][0]["evidence"])
    assert [p for p in schema["paths"]["/api/v1/queries/{query_id}/"]["get"]["parameters"]
            if p["name"] == "until"][0]["schema"]["enum"] == ["done", "evidence"]
