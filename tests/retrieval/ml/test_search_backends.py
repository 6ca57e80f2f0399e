"""Search backends (retrieval/ml/search.py): exact vs FAISS HNSW/IVF, persistence, errors, auto choice."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from retrieval.ml import search
from retrieval.ml.search import (
    EXACT, FAISS_HNSW, FAISS_IVF, INDEX_FILE, MANIFEST_FILE, ExactBackend, FaissHNSWBackend, FaissIVFBackend,
    SearchBackend, build_backend, cosine_topk, ivf_lists, ivf_probes, l2_normalise, load_backend,
)

DEMO_SIZE, LITE0_DIM = 1500, 1280
K = 6
NEVER = 10**9  # faiss_min_vectors that keeps "auto" exact


def clustered(n: int, dimension: int, clusters: int, *, seed: int, spread: float = 0.6) -> np.ndarray:
    """Unit vectors around ``clusters`` centres that share a positive mean, like pooled CNN features."""
    rng = np.random.default_rng(seed)
    mean = np.abs(rng.standard_normal(dimension)).astype(np.float32)
    centres = mean + rng.standard_normal((clusters, dimension)).astype(np.float32)
    members = rng.integers(0, clusters, n)
    return l2_normalise(centres[members] + spread * rng.standard_normal((n, dimension)).astype(np.float32))


def library_and_queries(n: int, dimension: int, clusters: int, queries: int, seed: int = 0):
    both = clustered(n + queries, dimension, clusters, seed=seed)
    return both[:n], both[n:]  # queries are held out: not library rows


@pytest.fixture(scope="module")
def demo():
    return library_and_queries(DEMO_SIZE, LITE0_DIM, 7 * 12, 100)


@pytest.fixture(scope="module")
def demo_backends(demo):
    library, _ = demo
    return {kind: build_backend(library, kind, faiss_min_vectors=NEVER) for kind in (EXACT, FAISS_HNSW, FAISS_IVF)}


@pytest.mark.parametrize("kind", [FAISS_HNSW, FAISS_IVF])
def test_faiss_backends_give_exactly_the_exact_results_on_a_demo_sized_library(demo, demo_backends, kind):
    _, queries = demo
    exact_indices, exact_scores = cosine_topk(queries, demo[0], K)
    backend = demo_backends[kind]
    indices, scores = backend.search(queries, K)
    assert backend.kind == kind and (backend.size, backend.dimension) == (DEMO_SIZE, LITE0_DIM)
    assert indices.dtype == np.int64 and scores.dtype == np.float32 and indices.shape == scores.shape == (100, K)
    np.testing.assert_array_equal(indices, exact_indices)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    # and also deeper than the six shown
    deep_indices, _ = backend.search(queries, 20)
    np.testing.assert_array_equal(deep_indices, cosine_topk(queries, demo[0], 20)[0])


def test_exact_backend_is_cosine_topk_over_the_vectors_without_a_copy(demo, demo_backends):
    library, queries = demo
    backend = demo_backends[EXACT]
    assert np.shares_memory(backend.vectors, library)
    indices, scores = backend.search(queries, K)
    expected_indices, expected_scores = cosine_topk(queries, library, K)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)


def test_every_backend_satisfies_the_search_protocol(demo_backends):
    assert all(isinstance(backend, SearchBackend) for backend in demo_backends.values())


@pytest.mark.parametrize("kind", [EXACT, FAISS_HNSW, FAISS_IVF])
def test_equal_scores_are_ordered_by_library_row(kind):
    base = clustered(300, 32, 5, seed=3)
    library = base.copy()
    library[[40, 7, 250]] = base[120]  # rows 7, 40, 120 and 250 are one vector
    backend = build_backend(library, kind, faiss_min_vectors=NEVER)
    indices, scores = backend.search(base[120:121], 4)
    assert indices.tolist() == [[7, 40, 120, 250]]
    np.testing.assert_allclose(scores, 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", [FAISS_HNSW, FAISS_IVF])
def test_approximate_search_finds_nearly_all_true_neighbours_on_a_larger_clustered_library(kind):
    library, queries = library_and_queries(20_000, 128, 200, 300, seed=5)
    backend = build_backend(library, kind, faiss_min_vectors=NEVER)
    # the search must really be approximate here, or this test would prove nothing
    if kind == FAISS_IVF:
        assert backend.nprobe < backend.nlist
    else:
        assert backend.ef_search < backend.size
    found, _ = backend.search(queries, K)
    truth, _ = cosine_topk(queries, library, K)
    recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)])
    assert recall >= 0.95, f"{kind} recall@{K} {recall:.3f}"


def test_ivf_searches_more_lists_when_the_probed_ones_hold_fewer_than_k_vectors():
    library = clustered(400, 16, 8, seed=2)
    backend = FaissIVFBackend.build(library, nlist=8, nprobe=1)
    queries = library[:5]
    indices, scores = backend.search(queries, 150)  # no list holds 150 of 400 vectors
    assert (indices >= 0).all()
    assert all(len(set(row)) == 150 for row in indices)
    assert (np.diff(scores, axis=1) <= 0).all()
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, library[indices]), atol=1e-5)


def test_ivf_and_hnsw_parameters_follow_the_library_size():
    assert ivf_lists(DEMO_SIZE) == DEMO_SIZE // 39  # at least 39 training points per list
    assert ivf_probes(DEMO_SIZE, ivf_lists(DEMO_SIZE)) == ivf_lists(DEMO_SIZE)  # small: exhaustive
    assert ivf_lists(1_000_000) == 4000 and ivf_probes(1_000_000, 4000) == 32
    assert ivf_lists(10) == 1
    with pytest.raises(ValueError, match="nprobe"):
        FaissIVFBackend.build(clustered(100, 8, 2, seed=1), nlist=2, nprobe=3)
    with pytest.raises(ValueError, match="nlist"):
        FaissIVFBackend.build(clustered(100, 8, 2, seed=1), nlist=101)
    with pytest.raises(ValueError, match="ef_search"):
        FaissHNSWBackend.build(clustered(100, 8, 2, seed=1), ef_search=0)


# --- persistence --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [FAISS_HNSW, FAISS_IVF])
def test_a_saved_index_is_read_back_not_rebuilt_and_answers_the_same(demo, demo_backends, kind, tmp_path,
                                                                     monkeypatch):
    library, queries = demo
    backend = demo_backends[kind]
    folder = backend.save(tmp_path / "backend")
    assert folder == tmp_path / "backend" / kind
    assert sorted(p.name for p in folder.iterdir()) == [INDEX_FILE, MANIFEST_FILE]
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert (manifest["kind"], manifest["size"], manifest["dimension"]) == (kind, DEMO_SIZE, LITE0_DIM)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the saved index should have been read, not rebuilt")

    monkeypatch.setattr(type(backend), "build", classmethod(no_rebuild))
    loaded = load_backend(tmp_path / "backend", library, kind, faiss_min_vectors=NEVER)
    assert type(loaded) is type(backend) and loaded.parameters == backend.parameters
    for got, expected in zip(loaded.search(queries, K), backend.search(queries, K)):
        np.testing.assert_array_equal(got, expected)
    # saving again replaces the earlier save
    backend.save(tmp_path / "backend")
    assert sorted(p.name for p in (tmp_path / "backend").iterdir()) == [kind]


def test_load_builds_and_saves_an_index_that_is_missing_or_was_built_on_other_vectors(tmp_path, caplog):
    library = clustered(500, 32, 10, seed=4)
    with caplog.at_level(logging.WARNING, logger="retrieval.ml.search"):
        first = load_backend(tmp_path, library, FAISS_HNSW, faiss_min_vectors=NEVER)
    assert "none was saved" in caplog.text
    assert (tmp_path / FAISS_HNSW / INDEX_FILE).exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval.ml.search"):
        again = load_backend(tmp_path, library, FAISS_HNSW, faiss_min_vectors=NEVER)
    assert caplog.text == "" and again.vectors_sha256 == first.vectors_sha256

    changed = library.copy()
    changed[[0, 1]] = changed[[1, 0]]  # same vectors, other rows: the saved index would be wrong
    with caplog.at_level(logging.WARNING, logger="retrieval.ml.search"):
        rebuilt = load_backend(tmp_path, changed, FAISS_HNSW, faiss_min_vectors=NEVER)
    assert "built on other vectors" in caplog.text
    assert rebuilt.search(changed[:1], 1)[0].tolist() == [[0]]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval.ml.search"):
        load_backend(tmp_path, changed[:400], FAISS_HNSW, faiss_min_vectors=NEVER)
    assert "holds 500 x 32 vectors, not 400 x 32" in caplog.text


def test_a_corrupt_saved_index_is_an_error_not_a_silent_rebuild(tmp_path):
    library = clustered(200, 16, 4, seed=6)
    build_backend(library, FAISS_IVF, faiss_min_vectors=NEVER).save(tmp_path)
    (tmp_path / FAISS_IVF / INDEX_FILE).write_bytes(b"not an index")
    with pytest.raises(ValueError, match="cannot read the saved faiss-ivf index"):
        load_backend(tmp_path, library, FAISS_IVF, faiss_min_vectors=NEVER)
    (tmp_path / FAISS_IVF / MANIFEST_FILE).write_text("{")
    with pytest.raises(ValueError, match="cannot read the search index manifest"):
        load_backend(tmp_path, library, FAISS_IVF, faiss_min_vectors=NEVER)


def test_a_saved_index_of_another_type_than_its_manifest_says_is_an_error(tmp_path):
    library = clustered(200, 16, 4, seed=6)
    build_backend(library, FAISS_IVF, faiss_min_vectors=NEVER).save(tmp_path)
    hnsw_folder = build_backend(library, FAISS_HNSW, faiss_min_vectors=NEVER).save(tmp_path)
    (hnsw_folder / INDEX_FILE).write_bytes((tmp_path / FAISS_IVF / INDEX_FILE).read_bytes())
    with pytest.raises(ValueError, match="does not match its manifest"):
        load_backend(tmp_path, library, FAISS_HNSW, faiss_min_vectors=NEVER)


def test_exact_search_loads_from_the_vectors_alone(tmp_path):
    library = clustered(50, 8, 3, seed=7)
    backend = load_backend(tmp_path / "nothing-here", library, EXACT, faiss_min_vectors=1)
    assert isinstance(backend, ExactBackend) and not (tmp_path / "nothing-here").exists()


# --- choice by setting and size -----------------------------------------------------------

def test_auto_is_exact_below_the_threshold_and_hnsw_at_or_above_it(tmp_path):
    library = clustered(40, 8, 3, seed=8)
    assert build_backend(library, faiss_min_vectors=41).kind == EXACT
    assert build_backend(library, "auto", faiss_min_vectors=40).kind == FAISS_HNSW
    assert load_backend(tmp_path, library, faiss_min_vectors=41).kind == EXACT
    assert load_backend(tmp_path, library, faiss_min_vectors=40).kind == FAISS_HNSW
    # an explicit kind wins over the size
    assert build_backend(library, EXACT, faiss_min_vectors=1).kind == EXACT
    assert build_backend(library, FAISS_IVF, faiss_min_vectors=NEVER).kind == FAISS_IVF


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["annoy", "", "Exact"])
def test_an_unknown_backend_is_refused(kind, tmp_path):
    library = clustered(20, 8, 2, seed=9)
    with pytest.raises(ValueError, match="unknown search backend"):
        build_backend(library, kind, faiss_min_vectors=10)
    with pytest.raises(ValueError, match="unknown search backend"):
        load_backend(tmp_path, library, kind, faiss_min_vectors=10)


@pytest.mark.parametrize("threshold", [0, -5, 2.5, True])
def test_a_bad_faiss_threshold_is_refused(threshold):
    with pytest.raises(ValueError, match="faiss_min_vectors"):
        build_backend(clustered(20, 8, 2, seed=9), faiss_min_vectors=threshold)


@pytest.mark.parametrize("kind", [EXACT, FAISS_HNSW, FAISS_IVF])
def test_bad_searches_are_refused_with_a_clear_message(kind):
    library = clustered(100, 8, 3, seed=10)
    backend = build_backend(library, kind, faiss_min_vectors=NEVER)
    queries = library[:2]
    for k in (0, -1, 101):
        with pytest.raises(ValueError, match=f"k={k} must be between 1 and the library size 100"):
            backend.search(queries, k)
    for k in (2.0, True, "6"):
        with pytest.raises(ValueError, match="k must be an integer"):
            backend.search(queries, k)
    with pytest.raises(ValueError, match="queries have dimension 9 but the library has dimension 8"):
        backend.search(l2_normalise(np.ones((1, 9))), 3)
    with pytest.raises(ValueError, match="2-D"):
        backend.search(queries[0], 3)
    bad = queries.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="queries row 1 is not finite"):
        backend.search(bad, 3)
    with pytest.raises(ValueError, match="queries row 0 has length 2, not 1"):
        backend.search(2 * queries, 3)
    assert backend.search(queries, 100)[0].shape == (2, 100)  # the whole library is a valid k


@pytest.mark.parametrize("kind", [EXACT, FAISS_HNSW, FAISS_IVF])
def test_bad_library_vectors_are_refused(kind):
    library = clustered(100, 8, 3, seed=11)
    infinite = library.copy()
    infinite[57, 0] = np.inf
    with pytest.raises(ValueError, match="vectors row 57 is not finite"):
        build_backend(infinite, kind, faiss_min_vectors=NEVER)
    unnormalised = library.copy()
    unnormalised[3] *= 0.5
    with pytest.raises(ValueError, match="vectors row 3 has length 0.5, not 1"):
        build_backend(unnormalised, kind, faiss_min_vectors=NEVER)
    zero = library.copy()
    zero[9] = 0
    with pytest.raises(ValueError, match="vectors row 9 has length 0"):
        build_backend(zero, kind, faiss_min_vectors=NEVER)
    for shape in [(0, 8), (8,)]:
        with pytest.raises(ValueError, match="non-empty 2-D array"):
            build_backend(np.ones(shape, dtype=np.float32), kind, faiss_min_vectors=NEVER)
    with pytest.raises(ValueError, match="floating-point"):
        build_backend(np.ones((4, 8), dtype=np.int64), kind, faiss_min_vectors=NEVER)


def test_vector_checks_cover_every_block_of_a_large_library(monkeypatch):
    monkeypatch.setattr(search, "CHECK_ROWS", 16)  # many blocks on a small array
    library = clustered(100, 8, 3, seed=12)
    library[99, 2] = np.nan
    with pytest.raises(ValueError, match="vectors row 99 is not finite"):
        ExactBackend(library)


# --- memory-mapped loading ------------------------------------------------------------------

def mapped_files() -> set[str]:
    """Paths of the files this process has memory-mapped (Linux /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        return {line.split(maxsplit=5)[5].strip() for line in maps if len(line.split(maxsplit=5)) == 6}


@pytest.mark.parametrize("kind", [FAISS_HNSW, FAISS_IVF])
def test_a_saved_index_is_read_memory_mapped_and_answers_as_the_in_memory_one(demo, demo_backends, kind, tmp_path):
    library, queries = demo
    np.save(tmp_path / "features.npy", library)
    features = np.load(tmp_path / "features.npy", mmap_mode="r")
    built = demo_backends[kind]
    folder = built.save(tmp_path / "backend")
    loaded = load_backend(tmp_path / "backend", features, kind, faiss_min_vectors=NEVER)
    assert loaded.memory_mapped and not built.memory_mapped
    assert str((folder / INDEX_FILE).resolve()) in mapped_files()
    for got, expected in zip(loaded.search(queries, K), built.search(queries, K)):
        np.testing.assert_array_equal(got, expected)
    # the features were not copied: what the exact backend searches is the memory map itself
    exact = load_backend(tmp_path / "backend", features, EXACT, faiss_min_vectors=NEVER)
    assert isinstance(features, np.memmap) and np.shares_memory(exact.vectors, features)


def test_a_load_verifies_a_sample_of_rows_and_a_full_check_or_an_older_manifest_reads_them_all(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(search, "SAMPLE_ROWS", 8)  # of 200 rows: rows 0, 28, 57, ... 199
    library = clustered(200, 16, 4, seed=13)
    build_backend(library, FAISS_HNSW, faiss_min_vectors=NEVER).save(tmp_path)
    full_reads = []
    real_fingerprint = search.fingerprint
    monkeypatch.setattr(search, "fingerprint", lambda v: full_reads.append(len(v)) or real_fingerprint(v))

    assert load_backend(tmp_path, library, FAISS_HNSW, faiss_min_vectors=NEVER).memory_mapped
    assert full_reads == []  # the sample sufficed

    sampled, between = library.copy(), library.copy()
    sampled[[0, 1]] = sampled[[1, 0]]  # row 0 is sampled
    between[[5, 6]] = between[[6, 5]]  # rows 5 and 6 are not
    with caplog.at_level(logging.WARNING, logger="retrieval.ml.search"):
        assert not load_backend(tmp_path, sampled, FAISS_HNSW, faiss_min_vectors=NEVER).memory_mapped
    assert "sampled rows differ" in caplog.text
    build_backend(library, FAISS_HNSW, faiss_min_vectors=NEVER).save(tmp_path)
    full_reads.clear()
    # the documented trade: an edit between the sampled rows passes the sample check ...
    assert load_backend(tmp_path, between, FAISS_HNSW, faiss_min_vectors=NEVER).memory_mapped
    # ... and is caught by the full check, which reads every row
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval.ml.search"):
        assert not load_backend(tmp_path, between, FAISS_HNSW, faiss_min_vectors=NEVER, verify="full").memory_mapped
    assert "built on other vectors" in caplog.text and full_reads[0] == 200

    build_backend(library, FAISS_HNSW, faiss_min_vectors=NEVER).save(tmp_path)
    manifest_path = tmp_path / FAISS_HNSW / MANIFEST_FILE
    older = json.loads(manifest_path.read_text())
    del older["vectors_sample_sha256"], older["sample_rows"]  # saved before samples were recorded
    manifest_path.write_text(json.dumps(older))
    full_reads.clear()
    assert load_backend(tmp_path, library, FAISS_HNSW, faiss_min_vectors=NEVER).memory_mapped
    assert full_reads == [200]
    with pytest.raises(ValueError, match="unknown verify mode 'none'"):
        load_backend(tmp_path, library, FAISS_HNSW, faiss_min_vectors=NEVER, verify="none")
