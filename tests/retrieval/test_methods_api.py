"""Every retrieval method through the API on a real tiny index: k distinct neighbours, ordered by
the method's own scores, with evidence map pairs (the query's second stage); and the method choice validated."""
from __future__ import annotations

import numpy as np
import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from retrieval import loaders, runtime
from retrieval.methods import METHODS
from retrieval.models import Case, QueryEvidence
from retrieval.services.evidence import evidence_run
from retrieval.services.queries import query_run
from tests.conftest import build_index_here
from tests.apiclient import api, error_of, submit

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

#: Without trained contrastive/triplet models an index serves the other eleven methods.
WITHOUT_EMBEDDINGS = [name for name in METHODS if name not in ("contrastive", "triplet")]


@pytest.fixture
def all_methods_index(tiny_method_models, settings):
    """An active index of the tiny library serving all thirteen methods: tiny contrastive and
    triplet embeddings, and the learned segmenter's masks for the Dice methods."""
    settings.INDEX_CHUNK_SIZE = 16
    runtime.forget()
    index = build_index_here(model_version=tiny_method_models["4ch"],
                             segmentation_model=tiny_method_models["segmentation"])
    assert index.status == "done" and index.active, index.message
    yield index
    runtime.forget()


@pytest.fixture(autouse=True)
def no_broker(sent_jobs):
    cache.clear()


def _test_image() -> bytes:
    return Case.objects.filter(split="test").order_by("id").first().image.read()


def test_without_embedding_models_the_index_serves_eleven_methods(ready_index, clinician):
    assert ready_index.methods == WITHOUT_EMBEDDINGS
    assert ready_index.contrastive_model is None and ready_index.segmentation_model is None
    assert ready_index.descriptors["segmentation"] == {"kind": "classical"}
    listed = api(clinician).get("/api/v1/methods/").json()
    assert [m["name"] for m in listed if m["available"]] == WITHOUT_EMBEDDINGS


def test_the_index_serves_every_method_and_the_api_lists_them(all_methods_index, tiny_method_models, clinician):
    assert all_methods_index.methods == list(METHODS)
    assert all_methods_index.contrastive_model == tiny_method_models["contrastive"]
    assert all_methods_index.triplet_model == tiny_method_models["triplet"]
    assert all_methods_index.descriptors["segmentation"]["kind"] == "learned"
    assert all_methods_index.descriptors["segmentation"]["model_version"] == tiny_method_models["segmentation"].id
    listed = api(clinician).get("/api/v1/methods/").json()
    assert [m["name"] for m in listed] == list(METHODS)
    assert [m["name"] for m in listed if m["available"]] == list(METHODS)
    assert [m["name"] for m in listed if m["default"]] == ["secbir"]
    assert APIClient().get("/api/v1/methods/").status_code == 401


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_returns_k_distinct_neighbours_by_its_own_scores(all_methods_index, clinician, media_root,
                                                                    method):
    from retrieval.ml import methods as scoring

    client = api(clinician)
    created = submit(client, _test_image(), k=5, method=method)
    assert created.status_code == 202, created.content
    assert query_run(query_id=created.json()["id"], worker="test") is True
    payload = client.get(created.json()["url"]).json()
    assert payload["status"] == "done", payload["error"]
    # The neighbours come first; their evidence map pairs follow in the second stage.
    assert [n["evidence"]["status"] for n in payload["neighbours"]] == ["pending"] * 5
    assert [n["evidence"]["query_map_url"] for n in payload["neighbours"]] == [None] * 5
    evidence_job = QueryEvidence.objects.get(query_id=payload["id"])
    assert evidence_run(evidence_id=evidence_job.id, worker="test") is True
    payload = client.get(created.json()["url"]).json()
    assert payload["method"] == method and payload["method_label"] == METHODS[method].label
    neighbours = payload["neighbours"]
    ids = [n["case_id"] for n in neighbours]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert all(Case.objects.get(id=i).split != "test" for i in ids)
    scores = [n["similarity"] for n in neighbours]
    assert scores == sorted(scores, reverse=True)

    # The same ranking, computed directly from the index's stored descriptors.
    encoder = runtime.descriptor_encoder_for(all_methods_index)
    loaded = runtime.loaded_index(all_methods_index)
    pixels = loaders.load_rgb(Case.objects.filter(split="test").order_by("id").first().image.path)
    needs = METHODS[method].needs
    encoded = encoder.encode([pixels], needs={"secbir", *needs}, packed_masks=False)
    rows, expected = scoring.method_topk(method, {d: encoded.descriptors[d][0] for d in needs},
                                         {d: loaded.descriptor(d) for d in needs}, 5)
    assert ids == loaded.case_ids[rows].tolist()
    assert np.allclose(scores, expected, atol=1e-4)

    # Evidence map pairs for every neighbour, served to the owner only.
    for neighbour in neighbours:
        evidence = neighbour["evidence"]
        assert evidence["status"] == "ready" and evidence["message"] is None
        for url in (evidence["query_map_url"], evidence["case_map_url"]):
            assert url.startswith("http://testserver/media/queries/")
            assert client.get(url).status_code == 200


def test_an_unknown_method_is_400_and_an_unserved_one_409(ready_index, clinician):
    client = api(clinician)
    error = error_of(submit(client, _test_image(), method="sift"), 400)
    assert "method" in error.get("fields", {})
    ready_index.methods = ["secbir"]
    ready_index.save(update_fields=["methods"])
    error = error_of(submit(client, _test_image(), method="style"), 409)
    assert "not available" in error["message"] and "secbir" in error["message"]
    assert submit(client, _test_image(), method="secbir").status_code == 202
    ready_index.methods = WITHOUT_EMBEDDINGS
    ready_index.save(update_fields=["methods"])
    error = error_of(submit(client, _test_image(), method="triplet"), 409)  # no triplet model was trained
    assert "Triplet embedding" in error["message"]


def test_the_search_page_offers_the_methods_and_submits_the_chosen_one(client, ready_index, clinician):
    from django.urls import reverse

    from retrieval.models import Query

    client.force_login(clinician)
    page = client.get(reverse("search")).content.decode()
    assert '<option value="style"' in page and 'value="triplet" disabled' in page
    assert client.get(reverse("methods")).status_code == 200
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(reverse("search"), {"image": SimpleUploadedFile("a.jpg", _test_image(), "image/jpeg"),
                                               "method": "i1_sc"})
    assert response.status_code == 302 and Query.objects.get().method == "i1_sc"
    response = client.post(reverse("search"), {"image": SimpleUploadedFile("a.jpg", _test_image(), "image/jpeg"),
                                               "method": "nonsense"})
    assert response.status_code == 400 and "Unknown similarity method" in response.content.decode()
    assert Query.objects.count() == 1
