"""The query service and worker function: upload -> PENDING -> run -> DONE/FAILED, on a real tiny index."""
from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from retrieval.classes import CODES
from retrieval.ml.metrics import neighbour_vote
from retrieval.models import Case, IndexVersion, Query, QueryNeighbour
from retrieval.selectors import query_payload
from retrieval.services.queries import (
    OOD_WARNING, VOTE_NOTE, QueryRejected, neighbour_vote_json, query_delete, query_refresh, query_run, query_submit,
)
from tests.retrieval.conftest import ISSUE_15_LABELS

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _image_bytes(fmt: str = "JPEG", size=(90, 60), exif_orientation: int | None = None, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), (190, 140, 120), np.uint8)
    pixels[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = (90, 50, 40)
    pixels = np.clip(pixels + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(buffer, fmt, exif=exif)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def _test_case_bytes() -> bytes:
    case = Case.objects.filter(split="test").order_by("id").first()
    return case.image.read()


def test_a_query_runs_to_six_ranked_neighbours_with_overlays_and_a_vote(ready_index, clinician, media_root,
                                                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        query = query_submit(user=clinician, image_data=_test_case_bytes(), filename="lesion.jpg")
    assert query.status == "pending" and query.k == 6 and query.index_version == ready_index
    assert len(callbacks) == 1  # the task is sent only once the row is committed

    assert query_run(query_id=query.id, worker="w") is True
    assert query_run(query_id=query.id, worker="w") is False  # a redelivered task does nothing
    query.refresh_from_db()
    assert query.status == "done", query.message
    neighbours = list(query.neighbours.select_related("case"))
    assert [n.rank for n in neighbours] == [1, 2, 3, 4, 5, 6] and QueryNeighbour.objects.count() == 6
    similarities = [n.similarity for n in neighbours]
    assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1.0001 for s in similarities)
    assert all(n.case.split != "test" for n in neighbours)
    assert query.best_similarity == pytest.approx(similarities[0])

    # the neighbours are the exact nearest library vectors of the query image's SE-CBIR features
    from retrieval import runtime
    from retrieval.ml.features import resize_rgb

    encoder = runtime.encoder_for(ready_index.model_version)
    with Image.open(query.image.path) as image:
        mine = encoder.encode(resize_rgb(image, encoder.config.input_size)[None]).features[0]
    features = np.load(media_root / ready_index.directory / "features.npy")
    ids = np.load(media_root / ready_index.directory / "case_ids.npy")
    scores = features @ mine
    assert [n.case_id for n in neighbours] == ids[np.argsort(-scores, kind="stable")[:6]].tolist()
    assert similarities == pytest.approx(np.sort(scores)[::-1][:6].tolist(), abs=1e-5)

    vote = query.neighbour_vote
    assert vote["label"] == "neighbour vote" and "not a diagnosis" in vote["note"]
    assert sum(vote["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(vote["counts"].values()) == 6 and vote["top"] in vote["counts"]
    assert vote == neighbour_vote_json([n.case.dx for n in neighbours]) and vote["top"] == vote["order"][0]

    with Image.open(query.saliency.path) as overlay:  # at most 512 px on the long side, same aspect
        assert overlay.has_transparency_data and overlay.size == (512, round(512 * query.height / query.width))
    for neighbour in neighbours:
        with Image.open(media_root / neighbour.saliency) as overlay:
            assert overlay.has_transparency_data
            assert abs(overlay.width / overlay.height - neighbour.case.width / neighbour.case.height) < 0.02
    cached = media_root / neighbours[0].saliency
    mtime = cached.stat().st_mtime_ns
    again = query_submit(user=clinician, image_data=_test_case_bytes())
    query_run(query_id=again.id, worker="w")
    assert cached.stat().st_mtime_ns == mtime  # library overlays are rendered once per index version


def test_the_stored_vote_of_issue_15_is_count_based_in_the_rules_order():
    assert neighbour_vote_json(ISSUE_15_LABELS) == {
        "label": "neighbour vote",
        "top": "nv",
        "order": ["nv", "bkl", "mel", "akiec"],
        "n": 6,
        "counts": {"nv": 2, "bkl": 2, "mel": 1, "akiec": 1},
        "scores": {"nv": 0.3333, "bkl": 0.3333, "mel": 0.1667, "akiec": 0.1667},
        "note": VOTE_NOTE,
    }
    assert "not a diagnosis" in VOTE_NOTE and "weighted" not in VOTE_NOTE


@hypothesis_settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(CODES), min_size=1, max_size=20))
def test_the_stored_vote_names_the_reader_studys_class_first_for_any_neighbours(labels):
    vote = neighbour_vote_json(labels)

    # readerstudy.services stores neighbour_vote(...) of the metrics module as the majority vote.
    assert vote["top"] == neighbour_vote(labels) == vote["order"][0]
    assert vote["n"] == len(labels) and sum(vote["counts"].values()) == len(labels)
    assert set(vote["order"]) == set(vote["counts"]) == set(vote["scores"]) == set(labels)
    assert sum(vote["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    assert [vote["counts"][code] for code in vote["order"]] == sorted(vote["counts"].values(), reverse=True)


def test_payload_has_the_api_shape(ready_index, clinician):
    query = query_submit(user=clinician, image_data=_test_case_bytes(), k=3)
    pending = query_payload(query)
    assert pending["status"] == "pending" and pending["neighbours"] == [] and pending["neighbour_vote"] is None
    query_run(query_id=query.id, worker="w")
    query.refresh_from_db()
    body = query_payload(query, url=lambda path: "http://testserver" + path)
    assert set(body) >= {"id", "status", "error", "created", "model_version", "index_version", "query_image_url",
                         "query_saliency_url", "neighbour_vote", "warning", "ood", "neighbours"}
    assert body["model_version"] == ready_index.model_version_id and body["index_version"] == ready_index.id
    assert body["query_image_url"].startswith("http://testserver/media/queries/")
    assert body["query_saliency_url"].endswith("-saliency.png")
    assert len(body["neighbours"]) == 3
    first = body["neighbours"][0]
    case = Case.objects.get(id=first["case_id"])
    assert first["diagnosis"] == case.dx and first["image_id"] == case.image_id
    assert first["diagnosis_label"] == case.get_dx_display()
    assert first["image_url"] == f"http://testserver/media/{case.image.name}"
    assert set(first["metadata"]) == {"age", "sex", "localization", "diagnosis_type", "diagnosis_type_label",
                                      "lesion_id"}


def test_exif_orientation_is_applied_and_other_formats_are_stored_as_png(ready_index, clinician):
    rotated = query_submit(user=clinician, image_data=_image_bytes(size=(90, 60), exif_orientation=6))
    assert (rotated.width, rotated.height) == (60, 90) and rotated.image.name.endswith(".png")
    with Image.open(rotated.image.path) as stored:
        assert stored.size == (60, 90)
    for fmt in ("TIFF", "WEBP", "BMP"):
        query = query_submit(user=clinician, image_data=_image_bytes(fmt))
        assert query.image.name.endswith(".png") and (query.width, query.height) == (90, 60)
    plain = _image_bytes("JPEG")
    kept = query_submit(user=clinician, image_data=plain)
    assert kept.image.read() == plain  # an upright JPEG is stored byte for byte


@pytest.mark.parametrize("data, message, status", [
    (b"", "the file is empty", 400),
    (b"GIF89a" + b"\0" * 40, "not a readable image", 400),
    (_image_bytes("PNG")[:200], "damaged or truncated", 400),
])
def test_bad_uploads_are_refused_with_a_readable_message_and_store_nothing(ready_index, clinician, media_root,
                                                                           data, message, status):
    with pytest.raises(QueryRejected, match=message) as caught:
        query_submit(user=clinician, image_data=data)
    assert caught.value.status_code == status
    assert Query.objects.count() == 0 and not (media_root / "queries").exists()


def test_too_large_uploads_and_bad_k(ready_index, clinician, settings):
    settings.QUERY_MAX_UPLOAD_MB = 1
    with pytest.raises(QueryRejected, match="larger than 1 MB") as caught:
        query_submit(user=clinician, image_data=b"\xff" * (1024 * 1024 + 1))
    assert caught.value.status_code == 413
    for k in (0, 21, "6", True):
        with pytest.raises(QueryRejected, match="from 1 to 20"):
            query_submit(user=clinician, image_data=_image_bytes(), k=k)
    assert Query.objects.count() == 0


def test_no_index_yet_is_a_503_with_a_message(tiny_models, clinician):
    with pytest.raises(QueryRejected, match="No case library index is ready yet") as caught:
        query_submit(user=clinician, image_data=_image_bytes())
    assert caught.value.status_code == 503


def test_a_query_whose_image_became_unreadable_fails_with_a_clinician_message(ready_index, clinician, media_root):
    query = query_submit(user=clinician, image_data=_image_bytes())
    (media_root / query.image.name).write_bytes(b"garbage")
    assert query_run(query_id=query.id, worker="w")
    query.refresh_from_db()
    assert query.status == "failed" and f"reference: query #{query.id}" in query.message
    assert "Traceback" not in query.message and not query.neighbours.exists()


def test_out_of_distribution_warning_follows_the_calibrated_threshold(ready_index, clinician):
    IndexVersion.objects.filter(id=ready_index.id).update(calibration={**ready_index.calibration, "threshold": 1.5})
    unlike = query_submit(user=clinician, image_data=_image_bytes())
    query_run(query_id=unlike.id, worker="w")
    unlike.refresh_from_db()
    assert unlike.status == "done" and unlike.warning == OOD_WARNING
    assert query_payload(unlike)["warning"] == unlike.warning
    assert query_payload(unlike)["ood"]["threshold"] == 1.5

    IndexVersion.objects.filter(id=ready_index.id).update(calibration={**ready_index.calibration, "threshold": -1.5})
    like = query_submit(user=clinician, image_data=_test_case_bytes())
    query_run(query_id=like.id, worker="w")
    like.refresh_from_db()
    assert like.warning == "" and query_payload(like)["warning"] is None


def test_a_query_held_by_a_dead_worker_is_resent_then_taken_over(ready_index, clinician, sent_jobs):
    sent = sent_jobs["query"]
    query = query_submit(user=clinician, image_data=_test_case_bytes())
    long_ago = timezone.now() - timedelta(hours=1)
    Query.objects.filter(id=query.id).update(status="running", worker="dead", attempts=1, heartbeat_at=long_ago,
                                             enqueued_at=long_ago)
    refreshed = query_refresh(query=Query.objects.get(id=query.id))  # what the next poll of the page or the API does
    assert sent == [query.id] and refreshed.status == "running"
    query_refresh(query=refreshed)
    assert sent == [query.id]  # re-sent once, not on every poll
    assert query_run(query_id=query.id, worker="alive") is True
    query.refresh_from_db()
    assert query.status == "done" and query.attempts == 2 and query.worker == "alive"


def test_a_live_workers_query_is_not_taken_over(ready_index, clinician):
    query = query_submit(user=clinician, image_data=_test_case_bytes())
    Query.objects.filter(id=query.id).update(status="running", worker="busy", attempts=1, heartbeat_at=timezone.now())
    assert query_run(query_id=query.id, worker="other") is False
    assert Query.objects.get(id=query.id).worker == "busy"


def test_a_dead_workers_late_result_is_discarded(ready_index, clinician, monkeypatch):
    """The first worker was only slow; a second took over; the first must not overwrite the result."""
    from retrieval.services import queries

    query = query_submit(user=clinician, image_data=_test_case_bytes())
    real = queries.analyse

    def slow_then_overtaken(q, worker):
        Query.objects.filter(id=q.id).update(worker="other")  # taken over while we computed
        return real(q, worker)

    monkeypatch.setattr(queries, "analyse", slow_then_overtaken)
    query_run(query_id=query.id, worker="slow")
    query.refresh_from_db()
    assert query.status == "running" and not query.neighbours.exists() and not query.saliency


def test_repeatedly_interrupted_and_never_picked_up_queries_fail_with_messages(ready_index, clinician, settings):
    long_ago = timezone.now() - timedelta(hours=2)
    interrupted = query_submit(user=clinician, image_data=_image_bytes())
    Query.objects.filter(id=interrupted.id).update(status="running", attempts=settings.JOB_MAX_ATTEMPTS,
                                                   heartbeat_at=long_ago)
    assert query_refresh(query=Query.objects.get(id=interrupted.id)).status == "failed"  # the next poll's row
    assert "interrupted several times" in Query.objects.get(id=interrupted.id).message
    assert query_run(query_id=interrupted.id, worker="w") is False

    forgotten = query_submit(user=clinician, image_data=_image_bytes(seed=2))
    Query.objects.filter(id=forgotten.id).update(created_at=long_ago)
    failed = query_refresh(query=Query.objects.get(id=forgotten.id))
    assert failed.status == "failed" and "did not pick up" in failed.message


def test_delete_removes_the_row_and_its_files_but_not_shared_overlays(ready_index, clinician, media_root,
                                                                      django_capture_on_commit_callbacks):
    query = query_submit(user=clinician, image_data=_test_case_bytes())
    query_run(query_id=query.id, worker="w")
    query.refresh_from_db()
    own = [query.image.name, query.saliency.name]
    shared = list(query.neighbours.values_list("saliency", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        query_delete(query=query)
    assert not Query.objects.filter(id=query.id).exists() and not QueryNeighbour.objects.exists()
    assert not any(default_storage.exists(name) for name in own)
    assert all(default_storage.exists(name) for name in shared)
