"""The Qdrant backend (retrieval/ml/search_qdrant.py) in qdrant-client's local mode, and search
filters on every backend: the same neighbours as the exact search, filtered inside the search."""
from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from retrieval.ml.search import (
    EXACT, FAISS_HNSW, FAISS_IVF, QDRANT, RowMetadata, SearchBackend, SearchFilter, build_backend, cosine_topk,
)
from retrieval.ml.search_qdrant import QdrantBackend, collection_filter, drop_collections
from tests.retrieval.ml.test_search_backends import DEMO_SIZE, K, NEVER, library_and_queries

SITES = ("back", "face", "lower extremity", "trunk", "unknown")
SEXES = ("male", "female", "unknown")
DATASETS = ("vidir_modern", "rosendahl", "vienna_dermatology")
DIMENSION = 64  # filters and ordering do not depend on the width; a narrow library keeps this quick


def payload_rows(n: int, seed: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"case_id": 1000 + i, "diagnosis": "nv", "lesion_id": f"HAM_{i // 2:07d}",  # two images per lesion
             "patient_id": f"IP_{i // 6:07d}" if i % 3 else "", "split": "train",
             "site": SITES[rng.integers(len(SITES))], "sex": SEXES[rng.integers(len(SEXES))],
             "age": None if i % 11 == 0 else int(rng.integers(0, 18)) * 5,
             "dataset": DATASETS[rng.integers(len(DATASETS))]} for i in range(n)]


@pytest.fixture(scope="module")
def demo():
    library, queries = library_and_queries(DEMO_SIZE, DIMENSION, 7 * 12, 40, seed=2)
    return library, queries, payload_rows(DEMO_SIZE)


@pytest.fixture(scope="module")
def backends(demo):
    library, _, payload = demo
    out = {kind: build_backend(library, kind, faiss_min_vectors=NEVER) for kind in (EXACT, FAISS_HNSW, FAISS_IVF)}
    metadata = RowMetadata.from_payload(payload)
    for backend in out.values():
        backend.attach_metadata(metadata)
    client = QdrantClient(":memory:")
    out[QDRANT] = QdrantBackend.create(client, "test-index-1-secbir", library, payload)
    yield out
    client.close()


FILTERS = {
    "own lesion and patient": SearchFilter(exclude_lesion_ids=("HAM_0000003", "HAM_0000010"),
                                           exclude_patient_ids=("IP_0000004",)),
    "site and sex": SearchFilter(sites=("back", "trunk"), sexes=("female",)),
    "age range": SearchFilter(age_min=30, age_max=55),
    "dataset": SearchFilter(datasets=("rosendahl",)),
    "everything": SearchFilter(sites=("face", "back", "trunk"), sexes=("male", "unknown"), age_min=10,
                               datasets=("vidir_modern", "rosendahl"), exclude_lesion_ids=("HAM_0000001",)),
    # what the query path adds for cases withdrawn from the library (case ids 1000 + row)
    "withdrawn cases": SearchFilter().excluding_cases(range(1000, 1000 + DEMO_SIZE, 3)),
    "withdrawn cases and a site": SearchFilter(sites=("trunk",)).excluding_cases([1001, 1004, 1010]),
}


def test_qdrant_gives_exactly_the_exact_neighbours_and_scores(demo, backends):
    library, queries, _ = demo
    backend = backends[QDRANT]
    assert isinstance(backend, SearchBackend) and (backend.size, backend.dimension) == (DEMO_SIZE, DIMENSION)
    expected_indices, expected_scores = cosine_topk(queries, library, K)
    indices, scores = backend.search(queries, K)
    assert indices.dtype == np.int64 and scores.dtype == np.float32 and indices.shape == (len(queries), K)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    np.testing.assert_array_equal(backend.search(queries, 20)[0], cosine_topk(queries, library, 20)[0])


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("kind", [EXACT, FAISS_HNSW, FAISS_IVF, QDRANT])
def test_every_backend_gives_the_same_filtered_neighbours_all_allowed(demo, backends, kind, name):
    library, queries, payload = demo
    where = FILTERS[name]
    allowed = RowMetadata.from_payload(payload).allowed(where)
    assert 0 < allowed.sum() < DEMO_SIZE  # each filter restricts, and leaves plenty
    # The reference: exact search over the allowed rows alone, mapped back to library rows.
    rows = np.flatnonzero(allowed)
    reference, reference_scores = cosine_topk(queries, library[rows], K)
    indices, scores = backends[kind].search(queries, K, where=where)
    np.testing.assert_array_equal(indices, rows[reference])
    np.testing.assert_allclose(scores, reference_scores, atol=1e-5)
    assert allowed[indices].all()


def test_the_allowed_rows_follow_each_field(demo):
    _, _, payload = demo
    metadata = RowMetadata.from_payload(payload)
    keep = metadata.allowed(FILTERS["own lesion and patient"])
    for row, allowed in zip(payload, keep):
        assert allowed == (row["lesion_id"] not in ("HAM_0000003", "HAM_0000010") and row["patient_id"] != "IP_0000004")
    keep = metadata.allowed(SearchFilter(age_min=30, age_max=55))
    for row, allowed in zip(payload, keep):
        assert allowed == (row["age"] is not None and 30 <= row["age"] <= 55)  # unknown age never in a range
    assert metadata.allowed(SearchFilter()).all()
    keep = metadata.allowed(SearchFilter().excluding_cases([1000, 1007, 99999]))
    assert [row for row, allowed in enumerate(keep) if not allowed] == [0, 7]  # an id not in the index drops nothing


@pytest.mark.parametrize("kind", [EXACT, FAISS_HNSW, FAISS_IVF, QDRANT])
def test_a_filter_that_leaves_fewer_than_k_rows_returns_those_and_none_returns_none(demo, backends, kind):
    _, queries, payload = demo
    lesions = sorted({row["lesion_id"] for row in payload})
    few = SearchFilter(exclude_lesion_ids=tuple(lesions[2:]))  # two lesions left: four images
    indices, scores = backends[kind].search(queries[:3], K, where=few)
    assert indices.shape == scores.shape == (3, 4)
    assert {payload[i]["lesion_id"] for i in indices.ravel()} == set(lesions[:2])
    assert np.all(np.diff(scores, axis=1) <= 0)
    indices, scores = backends[kind].search(queries[:3], K, where=SearchFilter(datasets=("no such dataset",)))
    assert indices.shape == scores.shape == (3, 0)


def test_a_filter_without_row_metadata_is_an_error(demo):
    library, queries, _ = demo
    backend = build_backend(library, EXACT, faiss_min_vectors=NEVER)
    with pytest.raises(ValueError, match="no row metadata"):
        backend.search(queries, K, where=SearchFilter(sites=("back",)))
    backend.search(queries, K, where=SearchFilter())  # the empty filter needs none


def test_search_filter_validates_and_round_trips_as_json():
    where = SearchFilter(sites=("trunk", "back", "back"), age_min=20, exclude_lesion_ids=("", "HAM_1"))
    assert where.sites == ("back", "trunk") and where.exclude_lesion_ids == ("HAM_1",)
    assert where.as_json() == {"exclude_lesion_ids": ["HAM_1"], "sites": ["back", "trunk"], "age_min": 20}
    assert SearchFilter.from_json(where.as_json()) == where and SearchFilter.from_json({}).empty
    for bad, message in (({"age_min": 50, "age_max": 40}, "above"), ({"age_min": -1}, "non-negative"),
                         ({"sites": "back"}, "sequence of strings"), ({"colour": ["red"]}, "unknown")):
        with pytest.raises(ValueError, match=message):
            SearchFilter.from_json(bad)
    assert collection_filter(SearchFilter()) is None
    # The withdrawn cases are the query path's own restriction: never stored, never taken from a user.
    withdrawn = where.excluding_cases([7, 3, 7])
    assert withdrawn.exclude_case_ids == (3, 7) and not withdrawn.empty and withdrawn.as_json() == where.as_json()
    assert SearchFilter().excluding_cases([]).empty
    with pytest.raises(ValueError, match="unknown search filter fields: exclude_case_ids"):
        SearchFilter.from_json({"exclude_case_ids": [3]})
    with pytest.raises(ValueError, match="sequence of integers"):
        SearchFilter(exclude_case_ids=("3",))


def test_opening_a_missing_or_mismatched_collection_is_an_error_and_cleanup_drops_it(demo):
    library, _, payload = demo
    client = QdrantClient(":memory:")
    with pytest.raises(ValueError, match="does not exist"):
        QdrantBackend.open(client, "nothing", size=DEMO_SIZE, dimension=DIMENSION)
    QdrantBackend.create(client, "small", library[:100], payload[:100])
    with pytest.raises(ValueError, match="holds 100 x 64 vectors, not 1500 x 64"):
        QdrantBackend.open(client, "small", size=DEMO_SIZE, dimension=DIMENSION)
    again = QdrantBackend.create(client, "small", library[:50], payload[:50])  # a rerun build replaces it
    assert again.size == 50
    with pytest.raises(ValueError, match="payload rows"):
        QdrantBackend.create(client, "other", library[:10], payload[:9])
    assert drop_collections(client, ["small", "nothing"]) == ["small"]
    assert not client.collection_exists("small")
    client.close()
