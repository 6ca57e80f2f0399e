"""SEARCH_BACKEND=qdrant end to end on the tiny demo library: an index build upserts its
collection (qdrant-client's local mode, no server), and queries sent through the service, the
API and the search page get the same neighbours as with the exact backend. A test marked
``services`` runs the backend against a real Qdrant server when QDRANT_URL is set."""
from __future__ import annotations

import os

import numpy as np
import pytest

from retrieval import loaders, runtime
from retrieval.ml.search import SearchFilter, cosine_topk
from retrieval.ml.search_qdrant import QdrantBackend
from retrieval.models import Case, Query
from retrieval.services.cleanup import index_versions_remove
from retrieval.services.queries import query_run
from tests.apiclient import api, submit, upload
from tests.conftest import build_active_index_here

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

QUERY_CASES = 4  # library images sent as queries (their own case is then rank 1 on every backend)


def _images() -> list[bytes]:
    cases = Case.objects.filter(split="test").order_by("id")[:QUERY_CASES]
    return [case.image.read() for case in cases]


def _neighbours_by_every_path(client, user, images: list[bytes]) -> list[list[int]]:
    """Per image: the neighbour case ids of a query sent by the API, and of one sent by the page
    (run by the worker function), read back from the API and the result page."""
    found = []
    for data in images:
        response = submit(api(user), data, k=6)
        assert response.status_code == 202, response.content
        api_query = Query.objects.get(pk=response.json()["id"])
        client.force_login(user)
        page = client.post("/search/", {"image": upload(data, "lesion.jpg"), "k": "6"})
        page_query = Query.objects.exclude(pk=api_query.pk).order_by("-id").first()
        assert page.status_code == 302
        for query in (api_query, page_query):
            assert query_run(query_id=query.id, worker="w") is True
            query.refresh_from_db()
            assert query.status == "done", query.message
        body = api(user).get(f"/api/v1/queries/{api_query.id}/").json()
        from_api = [n["case_id"] for n in body["neighbours"]]
        result = client.get(f"/queries/{page_query.pk}/").content.decode()
        assert result.count('<li class="neighbour"') >= 6
        from_page = list(page_query.neighbours.order_by("rank").values_list("case_id", flat=True))
        assert from_api == from_page and len(from_api) == 6
        found.append(from_api)
    return found


def test_qdrant_serves_the_same_neighbours_as_exact_through_service_api_and_page(
        ready_index, tiny_models, clinician, client, settings):
    images = _images()
    exact = _neighbours_by_every_path(client, clinician, images)

    settings.SEARCH_BACKEND, settings.QDRANT_PATH = "qdrant", ":memory:"
    qdrant_index = build_active_index_here(settings, tiny_models["4ch"], chunk_size=16)
    name = loaders.qdrant_collection(qdrant_index.id)
    assert runtime.qdrant_client().collection_exists(name)
    assert runtime.qdrant_client().count(name).count == qdrant_index.size
    assert runtime.loaded_index(qdrant_index).backend.kind == "qdrant"
    assert _neighbours_by_every_path(client, clinician, images) == exact

    # The old version is removable now; the cleanup drops the new one's collection only with it.
    ready_index.refresh_from_db()
    assert not ready_index.active
    index_versions_remove(indexes=[qdrant_index.id])  # the active one: kept
    assert runtime.qdrant_client().collection_exists(name)
    runtime.forget()


def test_a_missing_collection_is_written_at_load_from_the_index_files(ready_index, settings):
    settings.SEARCH_BACKEND, settings.QDRANT_PATH = "qdrant", ":memory:"
    runtime.forget()
    loaded = runtime.loaded_index(ready_index)  # built under exact: no collection yet
    assert loaded.backend.kind == "qdrant"
    queries = np.asarray(loaded.features[:3])
    ids, _ = loaded.search(queries, 6)
    np.testing.assert_array_equal(ids, loaded.case_ids[cosine_topk(queries, loaded.features, 6)[0]])
    runtime.forget()


def test_filters_give_the_same_neighbours_on_exact_and_qdrant_indexes(ready_index, settings):
    runtime.forget()
    exact = runtime.loaded_index(ready_index)
    queries = np.asarray(exact.features[:3])
    sites = sorted(set(Case.objects.values_list("localization", flat=True)))[:2]
    where = SearchFilter(sites=tuple(sites))
    exact_ids, _ = exact.search(queries, 6, where=where)
    settings.SEARCH_BACKEND, settings.QDRANT_PATH = "qdrant", ":memory:"
    runtime.forget()
    qdrant_ids, _ = runtime.loaded_index(ready_index).search(queries, 6, where=where)
    np.testing.assert_array_equal(qdrant_ids, exact_ids)
    assert set(Case.objects.filter(id__in=qdrant_ids.ravel().tolist()).values_list("localization", flat=True)) \
        <= set(sites)
    runtime.forget()


@pytest.mark.services
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="QDRANT_URL is not set: no Qdrant server to test")
def test_a_real_qdrant_server_gives_the_exact_neighbours():
    from qdrant_client import QdrantClient

    rng = np.random.default_rng(0)
    library = rng.standard_normal((500, 32)).astype(np.float32)
    library /= np.linalg.norm(library, axis=1, keepdims=True)
    client = QdrantClient(url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY"))
    name = f"lesionsearch-test-{os.getpid()}"
    try:
        backend = QdrantBackend.create(client, name, library,
                                       [{"case_id": i, "site": "back" if i % 2 else "face"} for i in range(500)])
        indices, _ = backend.search(library[:5], 6)
        np.testing.assert_array_equal(indices, cosine_topk(library[:5], library, 6)[0])
        filtered, _ = backend.search(library[:5], 6, where=SearchFilter(sites=("back",)))
        assert (filtered % 2 == 1).all()
    finally:
        client.delete_collection(name)


@pytest.mark.parametrize("backend", ["exact", "qdrant"])
def test_a_filtered_query_keeps_only_matching_cases_stores_its_filter_and_notes_too_few(
        ready_index, clinician, settings, backend):
    if backend == "qdrant":
        settings.SEARCH_BACKEND, settings.QDRANT_PATH = "qdrant", ":memory:"
    runtime.forget()
    image = _images()[0]
    from collections import Counter

    site = min(Counter(Case.objects.values_list("localization", flat=True)).items(), key=lambda kv: (kv[1], kv[0]))[0]
    matching = set(Case.objects.filter(localization=site).values_list("id", flat=True))
    assert 0 < len(matching) < 6  # the tiny library has few cases per site: fewer than k
    response = submit(api(clinician), image, k=6, filters='{"sites": ["%s"]}' % site)
    assert response.status_code == 202, response.content
    query = Query.objects.get(pk=response.json()["id"])
    assert query.search_filter == {"sites": [site]}
    assert query_run(query_id=query.id, worker="w") is True
    query.refresh_from_db()
    assert query.status == "done", query.message
    found = set(query.neighbours.values_list("case_id", flat=True))
    assert found == matching
    assert f"Only {len(matching)} library case" in query.warning
    body = api(clinician).get(f"/api/v1/queries/{query.id}/").json()
    assert body["filters"] == {"sites": [site]} and len(body["neighbours"]) == len(matching)
    runtime.forget()


def test_bad_filters_are_a_400_that_stores_nothing(ready_index, clinician):
    for filters, message in (('{"age_min": 60, "age_max": 20}', "above"), ('{"colour": ["red"]}', "unknown"),
                             ('["back"]', "JSON object"), ("not json", "")):
        response = submit(api(clinician), _images()[0], filters=filters)
        assert response.status_code == 400, (filters, response.content)
        assert message in response.content.decode()
    assert not Query.objects.exists()


def test_the_shown_filter_counts_excluded_patients_without_their_ids():
    from retrieval.selectors import query_filter_payload

    query = Query(search_filter={"exclude_patient_ids": ["IP_0000001", "IP_0000002"], "sexes": ["female"]})
    assert query_filter_payload(query) == {"sexes": ["female"], "excluded_patients": 2}
