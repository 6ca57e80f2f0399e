"""Nearest-neighbour search over the SE-CBIR vectors: the exact cosine top-k, and the search
backends behind one interface: exact (NumPy) or FAISS (HNSW, IVF).

:func:`cosine_topk` is the exact search over L2-normalised feature matrices (:func:`l2_normalise`),
with stable tie-breaking: equal scores are ordered by library row.

Library vectors and queries are float32 rows of unit length, so cosine similarity is the inner
product. Every backend answers ``search(queries (n, d), k) -> (indices int64 (n, k), scores
float32 (n, k))``, best first, equal scores ordered by library row (as the exact search does).

* ``exact``: :func:`cosine_topk` over the vectors, no copy, no build. One
  query against 10k x 1280 vectors is a ~50 MB matrix-vector product: a few milliseconds.
* ``faiss-hnsw``: ``IndexHNSWFlat``, inner product. About a millisecond per query on a million
  vectors; the graph takes minutes to build on a small CPU, so it is saved next to the vectors
  and read back on a worker's next start (:meth:`save` / :func:`load_backend`).
* ``faiss-ivf``: ``IndexIVFFlat``, inner product, ``nlist`` and ``nprobe`` derived from the size.
  Its k-means training is matrix products (fast on many cores or a GPU, slow on 2 cores) and
  new vectors are filed in a list without touching the others; per query it scans a few
  thousand vectors, so at 1280 dimensions it is slower than HNSW.

Both FAISS indexes store the vectors uncompressed (flat), so the scores they return are exact
inner products; only which rows are examined is approximate. ``auto`` picks exact below
``faiss_min_vectors`` vectors and HNSW at or above. Figures: ``bench/search_backends.py`` and
``docs/retrieval.md`` ("Search backends").

Threads: FAISS's OpenMP thread count is left at its default (all cores). Builds use them; a
single query is searched by one thread inside FAISS for both index types, and limiting FAISS
to one thread measured no different latency on the 2-core development machine, so nothing
here calls ``faiss.omp_set_num_threads``. (The exact backend's matrix product runs in NumPy's
BLAS, whose thread count the process environment sets: see docs/retrieval.md.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

_CHUNK = 256  # queries per block: bounds the (queries x library) score matrix in memory

AUTO = "auto"
EXACT = "exact"
FAISS_HNSW = "faiss-hnsw"
FAISS_IVF = "faiss-ivf"
QDRANT = "qdrant"
#: Kinds built from the vectors alone; "qdrant" needs a client and a collection
#: (:mod:`retrieval.ml.search_qdrant`), so build_backend/load_backend refuse it.
KINDS = (AUTO, EXACT, FAISS_HNSW, FAISS_IVF)
FAISS_KINDS = (FAISS_HNSW, FAISS_IVF)
ALL_KINDS = (*KINDS, QDRANT)

#: A row's length may differ from 1 by this much (float32 rounding is ~1e-7 at 1280 dims; an
#: unnormalised feature vector is off by far more).
UNIT_NORM_TOLERANCE = 1e-3
CHECK_ROWS = 65_536  # rows validated per block: bounds temporaries on million-row libraries
SAMPLE_ROWS = 1024  # rows a worker's load verifies (sample_fingerprint); all of them below that

# HNSW: M = 32 links per node and efConstruction = 80 gave recall@6 0.996 at efSearch 128 on
# 200k clustered 1280-d vectors, where efConstruction = 40 gave 0.979 (worse graph) for a
# build only 1.4x faster. On 1M such vectors recall@6 was 0.983 at efSearch 128 and 0.988 at
# 256 (p99 1.8 and 2.4 ms): 256 buys a margin over the 0.98 target well within 10 ms.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256

# IVF: nlist = 4 sqrt(n) (FAISS's guideline is 4-16 sqrt(n)), but at least 39 training points
# per list (below that FAISS's k-means warns and degrades). Each query probes at least
# IVF_NPROBE lists and at least IVF_MIN_SCANNED vectors, so small libraries (the demo's 1500)
# are scanned exhaustively: exact, and still cheap.
IVF_LISTS_PER_SQRT_N = 4
IVF_MIN_POINTS_PER_LIST = 39
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means sample; FAISS's default 256 quadruples training time
IVF_NPROBE = 32
IVF_MIN_SCANNED = 2048

VERIFY_SAMPLE = "sample"
VERIFY_FULL = "full"
VERIFY_MODES = (VERIFY_SAMPLE, VERIFY_FULL)

INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1


# --- exact cosine top-k --------------------------------------------------------------------

def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a feature vector is all zeros and has no direction")
    return features / norms


def cosine_topk(queries: np.ndarray, library: np.ndarray, k: int, *,
                exclude: list[set[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) into ``library`` and cosine similarities (n, k), best first.

    Both matrices must hold unit vectors (cosine = dot product). Equal scores are ordered by
    library index, so results never depend on sort internals. ``exclude[i]`` lists library rows
    that query i must not return (e.g. the query itself).
    """
    queries, library = np.asarray(queries, dtype=np.float32), np.asarray(library, dtype=np.float32)
    if queries.ndim != 2 or library.ndim != 2 or queries.shape[1] != library.shape[1]:
        raise ValueError(f"feature shapes do not match: queries {queries.shape}, library {library.shape}")
    available = library.shape[0] - (max((len(e) for e in exclude), default=0) if exclude else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k={k} but the library offers only {available} candidates")
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], _CHUNK):
        block = queries[start:start + _CHUNK] @ library.T
        if exclude:
            for row, banned in enumerate(exclude[start:start + _CHUNK]):
                if banned:
                    block[row, list(banned)] = -np.inf
        order = _top_k_rows(block, k)
        indices[start:start + len(block)] = order
        scores[start:start + len(block)] = np.take_along_axis(block, order, axis=1)
    return indices, scores


def _masked_topk(queries: np.ndarray, library: np.ndarray, k: int, allowed: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """cosine_topk over the ``allowed`` rows only, as row numbers of the whole library; at most
    as many results per query as rows are allowed (none when the filter allows none)."""
    rows = np.flatnonzero(allowed)
    k = min(k, len(rows))
    if k == 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    # Scored against the whole library and masked (not against a gathered copy of the allowed
    # rows): the same matrix product as the unfiltered search, so equal rows score equally.
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], _CHUNK):
        block = queries[start:start + _CHUNK] @ library.T
        block[:, ~allowed] = -np.inf
        order = _top_k_rows(block, k)
        indices[start:start + len(block)] = order
        scores[start:start + len(block)] = np.take_along_axis(block, order, axis=1)
    return indices, scores


def _top_k_rows(block: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column indices of the k largest scores, best first, ties by column index.

    A partial sort when k is small against the row length (a single query against a large
    library: the full sort would cost more than the matrix product): every column scoring at
    least the k-th best score is a candidate, so ties at the cut are ordered exactly as a full
    stable sort orders them.
    """
    if 4 * k >= block.shape[1]:
        return np.argsort(-block, axis=1, kind="stable")[:, :k]
    kth = -np.partition(-block, k - 1, axis=1)[:, k - 1]
    order = np.empty((block.shape[0], k), dtype=np.int64)
    for row, (scores, cut) in enumerate(zip(block, kth)):
        candidates = np.flatnonzero(scores >= cut)
        order[row] = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
    return order


# --- filters -------------------------------------------------------------------------------

#: Payload keys every backend filters on (the Qdrant payload, :class:`RowMetadata`'s columns).
PAYLOAD_KEYS = ("case_id", "diagnosis", "lesion_id", "patient_id", "split", "site", "sex", "age", "dataset")


#: SearchFilter fields set only by the query path, never read from a user's or a stored filter.
INTERNAL_FIELDS = ("exclude_case_ids",)


@dataclass(frozen=True)
class SearchFilter:
    """Which library rows a search may return, applied inside the search (before the top k).

    Empty fields restrict nothing; the empty filter is the thesis's result view. ``sites``,
    ``sexes`` and ``datasets`` keep rows whose value is one of those listed; ``age_min`` /
    ``age_max`` (inclusive) keep rows of known age in range (an unknown age never matches an
    age range); ``exclude_lesion_ids`` / ``exclude_patient_ids`` drop the query's own lesion or
    patient (an empty id is never excluded: it means "not known"). ``exclude_case_ids`` drops
    library cases by id: the query path adds the withdrawn cases (:meth:`excluding_cases`); it
    is internal (:data:`INTERNAL_FIELDS`), never stored on a query nor taken from a user.
    """

    exclude_lesion_ids: tuple[str, ...] = ()
    exclude_patient_ids: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    sexes: tuple[str, ...] = ()
    age_min: int | None = None
    age_max: int | None = None
    datasets: tuple[str, ...] = ()
    exclude_case_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        ids = self.exclude_case_ids
        if isinstance(ids, (str, bytes)) or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                                   for i in ids):
            raise ValueError(f"exclude_case_ids must be a sequence of integers, got {ids!r}")
        object.__setattr__(self, "exclude_case_ids", tuple(sorted({int(i) for i in ids})))
        for name in ("exclude_lesion_ids", "exclude_patient_ids", "sites", "sexes", "datasets"):
            values = getattr(self, name)
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{name} must be a sequence of strings, got {values!r}")
            object.__setattr__(self, name, tuple(sorted({v for v in values if v})))
        for name in ("age_min", "age_max"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError(f"age_min={self.age_min} is above age_max={self.age_max}")

    @property
    def empty(self) -> bool:
        return self == SearchFilter()

    def excluding_cases(self, case_ids) -> SearchFilter:
        """This filter, also dropping the library cases ``case_ids`` (the withdrawn ones)."""
        return replace(self, exclude_case_ids=(*self.exclude_case_ids, *(int(i) for i in case_ids)))

    def as_json(self) -> dict:
        """The non-empty public fields, as stored on a query (lists, in a fixed order)."""
        out = {}
        for key, value in asdict(self).items():
            if key not in INTERNAL_FIELDS and value not in ((), None):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict | None) -> SearchFilter:
        data = dict(data or {})
        unknown = set(data) - ({f.name for f in fields(cls)} - set(INTERNAL_FIELDS))
        if unknown:
            raise ValueError(f"unknown search filter fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class RowMetadata:
    """Per library row, the payload the exact and FAISS backends filter on (Qdrant keeps its own)."""

    case_id: np.ndarray  # (N,) int64
    lesion_id: np.ndarray  # (N,) str
    patient_id: np.ndarray
    site: np.ndarray
    sex: np.ndarray
    dataset: np.ndarray
    age: np.ndarray  # (N,) float64, NaN = unknown

    @classmethod
    def from_payload(cls, payload: list[dict]) -> RowMetadata:
        def column(key):
            return np.array([str(row.get(key) or "") for row in payload], dtype=object)

        return cls(case_id=np.array([int(row["case_id"]) for row in payload], dtype=np.int64),
                   lesion_id=column("lesion_id"), patient_id=column("patient_id"), site=column("site"),
                   sex=column("sex"), dataset=column("dataset"),
                   age=np.array([np.nan if row.get("age") is None else float(row["age"]) for row in payload]))

    def __len__(self) -> int:
        return len(self.age)

    def allowed(self, where: SearchFilter) -> np.ndarray:
        """(N,) bool: the rows ``where`` lets a search return."""
        keep = np.ones(len(self), dtype=bool)
        if where.exclude_case_ids:
            keep &= ~np.isin(self.case_id, np.array(where.exclude_case_ids, dtype=np.int64))
        if where.exclude_lesion_ids:
            keep &= ~np.isin(self.lesion_id, list(where.exclude_lesion_ids))
        if where.exclude_patient_ids:
            keep &= ~np.isin(self.patient_id, list(where.exclude_patient_ids))
        for values, column in ((where.sites, self.site), (where.sexes, self.sex), (where.datasets, self.dataset)):
            if values:
                keep &= np.isin(column, list(values))
        with np.errstate(invalid="ignore"):  # NaN (unknown age) compares False: excluded by a range
            if where.age_min is not None:
                keep &= self.age >= where.age_min
            if where.age_max is not None:
                keep &= self.age <= where.age_max
        return keep


def _allowed_rows(backend, where: SearchFilter | None) -> np.ndarray | None:
    """The boolean row mask of ``where`` over a backend's metadata; None when nothing is filtered."""
    if where is None or where.empty:
        return None
    metadata = getattr(backend, "metadata", None)
    if metadata is None:
        raise ValueError(f"the {backend.kind} backend has no row metadata to filter on (attach_metadata)")
    if len(metadata) != backend.size:
        raise ValueError(f"row metadata holds {len(metadata)} rows but the backend {backend.size}")
    return metadata.allowed(where)


# --- backends ------------------------------------------------------------------------------

@runtime_checkable
class SearchBackend(Protocol):
    """What the query path needs from any backend."""

    kind: str

    @property
    def size(self) -> int: ...

    @property
    def dimension(self) -> int: ...

    def search(self, queries: np.ndarray, k: int, *, where: SearchFilter | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 (n, k'), scores float32 (n, k')), best first, ties by library row;
        k' = min(k, rows ``where`` allows)."""
        ...


# --- validation ---------------------------------------------------------------------------

def check_unit_rows(vectors: np.ndarray, *, name: str = "vectors") -> np.ndarray:
    """``vectors`` as a float32 C-contiguous (n, d) array of finite unit rows, or ValueError.

    Float32 C-contiguous input (including a read-only memory map) is returned without a copy.
    """
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows x dimension), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    for start in range(0, array.shape[0], CHECK_ROWS):
        block = array[start:start + CHECK_ROWS]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{name} row {row} is not finite (NaN or infinity)")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        off = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
        if off.any():
            row = start + int(np.flatnonzero(off)[0])
            raise ValueError(f"{name} row {row} has length {norms[row - start]:.6g}, not 1: cosine search needs "
                             "L2-normalised rows (l2_normalise)")
    return array


def _check_queries(queries: np.ndarray, dimension: int) -> np.ndarray:
    array = np.asarray(queries)
    if array.ndim != 2:
        raise ValueError(f"queries must be a 2-D array (queries x dimension), got shape {array.shape}")
    if array.shape[1] != dimension:
        raise ValueError(f"queries have dimension {array.shape[1]} but the library has dimension {dimension}")
    return check_unit_rows(array, name="queries")


def _check_k(k: int, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= size:
        raise ValueError(f"k={k} must be between 1 and the library size {size}")
    return int(k)


def _check_kind(kind: str, faiss_min_vectors: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown search backend {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(faiss_min_vectors, bool) or not isinstance(faiss_min_vectors, (int, np.integer)) \
            or faiss_min_vectors < 1:
        raise ValueError(f"faiss_min_vectors must be a positive integer, got {faiss_min_vectors!r}")


def resolve_kind(kind: str, size: int, *, faiss_min_vectors: int) -> str:
    """The concrete backend kind for ``kind`` ("auto" becomes exact or faiss-hnsw by size)."""
    _check_kind(kind, faiss_min_vectors)
    if kind != AUTO:
        return kind
    return FAISS_HNSW if size >= faiss_min_vectors else EXACT


def _ordered(indices: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by descending score, equal scores by ascending library row (as exact search)."""
    order = np.lexsort((indices, -scores), axis=1)
    return (np.take_along_axis(indices, order, axis=1).astype(np.int64, copy=False),
            np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=False))


def fingerprint(vectors: np.ndarray) -> str:
    """SHA-256 of the vectors' shape and bytes: ties a saved index to the vectors it was built on."""
    digest = hashlib.sha256(f"{vectors.shape[0]}x{vectors.shape[1]} float32\n".encode())
    for start in range(0, vectors.shape[0], CHECK_ROWS):
        digest.update(np.ascontiguousarray(vectors[start:start + CHECK_ROWS], dtype=np.float32).data)
    return digest.hexdigest()


def sample_rows(size: int) -> np.ndarray:
    """The rows :func:`sample_fingerprint` reads: :data:`SAMPLE_ROWS` evenly spaced ones, first
    and last included (every row when ``size <= SAMPLE_ROWS``)."""
    return np.unique(np.linspace(0, size - 1, min(size, SAMPLE_ROWS)).round().astype(np.int64))


def sample_fingerprint(vectors: np.ndarray) -> str:
    """SHA-256 of the vectors' shape and of :data:`SAMPLE_ROWS` evenly spaced rows.

    What a worker checks when it loads a saved index: it reads ~5 MB of a memory-mapped
    1M x 1280 library instead of all 4.9 GB (which :func:`fingerprint` reads, once, at build),
    so the library stays shared and on disk until searched. It catches another library (other
    shape or other rows), not an edit of a row between the sampled ones: an index's files are
    written once, by the index build, and never edited in place.
    """
    rows = sample_rows(vectors.shape[0])
    digest = hashlib.sha256(f"{vectors.shape[0]}x{vectors.shape[1]} float32 rows {len(rows)}\n".encode())
    digest.update(np.ascontiguousarray(vectors[rows], dtype=np.float32).data)
    return digest.hexdigest()


# --- exact --------------------------------------------------------------------------------

class ExactBackend:
    """Exact cosine top-k by matrix product; needs nothing beyond the vectors."""

    kind = EXACT

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = check_unit_rows(vectors)
        self.metadata: RowMetadata | None = None

    def attach_metadata(self, metadata: RowMetadata) -> None:
        """The rows' payload, which ``search(where=...)`` filters on."""
        self.metadata = metadata

    @property
    def size(self) -> int:
        return self.vectors.shape[0]

    @property
    def dimension(self) -> int:
        return self.vectors.shape[1]

    def search(self, queries: np.ndarray, k: int, *, where: SearchFilter | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 (n, k'), scores float32 (n, k')), best first, ties by library row;
        k' = min(k, rows ``where`` allows): the disallowed rows are masked before the top k."""
        queries = _check_queries(queries, self.dimension)
        k = _check_k(k, self.size)
        allowed = _allowed_rows(self, where)
        if allowed is None:
            return cosine_topk(queries, self.vectors, k)
        return _masked_topk(queries, self.vectors, k, allowed)


# --- FAISS --------------------------------------------------------------------------------

def _faiss():
    import faiss  # imported on first use: the exact path and the web process never need it

    return faiss


class _FaissBackend:
    """Shared search, persistence and bookkeeping of the FAISS backends."""

    kind: str

    def __init__(self, index, parameters: dict, vectors_sha256: str, vectors_sample_sha256: str | None = None, *,
                 memory_mapped: bool = False) -> None:
        self.index = index
        self.parameters = dict(parameters)
        self.vectors_sha256 = vectors_sha256
        self.vectors_sample_sha256 = vectors_sample_sha256
        # True when read back with load_backend: the index's arrays (vectors, graph links, lists)
        # are views of the saved file, shared by every process on the host; FAISS aborts the
        # process on any attempt to add to such an index, so there is no add here.
        self.memory_mapped = memory_mapped
        self.metadata: RowMetadata | None = None

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    # Subclasses: how hard a search looks (efSearch / nprobe), its ceiling, and the parameters.
    def _effort(self, k: int) -> int:
        raise NotImplementedError

    def _max_effort(self) -> int:
        raise NotImplementedError

    def _search_parameters(self, effort: int, selector=None):
        raise NotImplementedError

    def attach_metadata(self, metadata: RowMetadata) -> None:
        """The rows' payload, which ``search(where=...)`` filters on."""
        self.metadata = metadata

    def search(self, queries: np.ndarray, k: int, *, where: SearchFilter | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 (n, k'), scores float32 (n, k')), best first, ties by library row;
        k' = min(k, rows ``where`` allows).

        FAISS marks missing results with -1 when the part of the index it examined holds fewer
        than k vectors (few IVF lists probed, a small HNSW beam). Those queries are searched
        again with twice the effort, up to exhaustive, so every row has k real neighbours.
        A filter is a ``faiss.IDSelectorBatch`` of the allowed rows in the search parameters:
        FAISS skips the other rows while it searches (no over-fetch); a filter that allows few
        rows leaves a small HNSW beam or few probed lists short, which the same retry covers.
        """
        queries = _check_queries(queries, self.dimension)
        k = _check_k(k, self.size)
        allowed = _allowed_rows(self, where)
        selector = None
        if allowed is not None:
            rows = np.flatnonzero(allowed).astype(np.int64)
            k = min(k, len(rows))
            if k == 0:
                return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
            selector = _faiss().IDSelectorBatch(rows)  # (kept referenced while FAISS searches)
        effort = self._effort(k)
        scores, indices = self.index.search(queries, k, params=self._search_parameters(effort, selector))
        missing = (indices < 0).any(axis=1)
        while missing.any():
            if effort >= self._max_effort():
                raise RuntimeError(f"{self.kind} found fewer than {k} neighbours for {int(missing.sum())} "
                                   f"queries even at its maximum search effort ({effort})")
            effort = min(2 * effort, self._max_effort())
            again_scores, again_indices = self.index.search(queries[missing], k,
                                                            params=self._search_parameters(effort, selector))
            scores[missing], indices[missing] = again_scores, again_indices
            missing = (indices < 0).any(axis=1)
        return _ordered(indices, scores)

    def manifest(self) -> dict:
        return {
            "format": MANIFEST_FORMAT, "kind": self.kind, "size": self.size, "dimension": self.dimension,
            "vectors_sha256": self.vectors_sha256, "vectors_sample_sha256": self.vectors_sample_sha256,
            "sample_rows": SAMPLE_ROWS, "parameters": self.parameters,
            "faiss_version": _faiss().__version__,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``<directory>/<kind>/`` (index.faiss + manifest.json); returns that folder.

        Written to a temporary sibling folder and renamed into place, so a reader never sees a
        half-written index; an earlier save of the same kind is replaced.
        """
        target = Path(directory) / self.kind
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{self.kind}.tmp-{uuid.uuid4().hex}")
        temporary.mkdir()
        try:
            _faiss().write_index(self.index, str(temporary / INDEX_FILE))
            (temporary / MANIFEST_FILE).write_text(json.dumps(self.manifest(), indent=2) + "\n")
            old = None
            if target.exists():
                old = target.with_name(f".{self.kind}.old-{uuid.uuid4().hex}")
                os.replace(target, old)
            try:
                os.replace(temporary, target)
            except OSError:
                # Another process saved into the same place between the two renames (two
                # workers rebuilding a missing index at once): keep the complete save it made.
                if not (target / MANIFEST_FILE).exists():
                    raise
                logger.info("%s was saved by another process meanwhile; keeping that copy", target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target


class FaissHNSWBackend(_FaissBackend):
    """FAISS ``IndexHNSWFlat`` with inner product: a navigable graph over the unit vectors."""

    kind = FAISS_HNSW

    @classmethod
    def build(cls, vectors: np.ndarray, *, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
              ef_search: int = HNSW_EF_SEARCH) -> FaissHNSWBackend:
        """Build the graph over ``vectors`` (unit float32 rows); minutes for a million 1280-d vectors."""
        vectors = check_unit_rows(vectors)
        for name, value in (("m", m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(vectors)
        return cls(index, {"m": m, "ef_construction": ef_construction, "ef_search": ef_search},
                   fingerprint(vectors), sample_fingerprint(vectors))

    @property
    def ef_search(self) -> int:
        return int(self.parameters["ef_search"])

    def _effort(self, k: int) -> int:
        return max(self.ef_search, k)  # the beam must hold at least k results

    def _max_effort(self) -> int:
        return max(self.size, self.ef_search)

    def _search_parameters(self, effort: int, selector=None):
        if selector is None:
            return _faiss().SearchParametersHNSW(efSearch=effort)
        return _faiss().SearchParametersHNSW(efSearch=effort, sel=selector)


def ivf_lists(size: int) -> int:
    """nlist for ``size`` vectors: 4 sqrt(n), but at least 39 k-means training points per list."""
    return max(1, min(round(IVF_LISTS_PER_SQRT_N * math.sqrt(size)), size // IVF_MIN_POINTS_PER_LIST))


def ivf_probes(size: int, nlist: int) -> int:
    """nprobe: at least IVF_NPROBE lists and IVF_MIN_SCANNED vectors (all lists on small libraries)."""
    return min(nlist, max(IVF_NPROBE, math.ceil(IVF_MIN_SCANNED * nlist / size)))


class FaissIVFBackend(_FaissBackend):
    """FAISS ``IndexIVFFlat`` with inner product: k-means lists, a few probed per query."""

    kind = FAISS_IVF

    @classmethod
    def build(cls, vectors: np.ndarray, *, nlist: int | None = None, nprobe: int | None = None,
              seed: int = 1234) -> FaissIVFBackend:
        """Train spherical k-means lists on a sample of ``vectors`` and file every vector in its list.

        ``nlist`` defaults to :func:`ivf_lists`, ``nprobe`` to :func:`ivf_probes`; both must lie
        in 1..size and 1..nlist.
        """
        vectors = check_unit_rows(vectors)
        size, dimension = vectors.shape
        nlist = ivf_lists(size) if nlist is None else nlist
        if not 1 <= nlist <= size:
            raise ValueError(f"nlist={nlist} must be between 1 and the number of vectors {size}")
        nprobe = ivf_probes(size, nlist) if nprobe is None else nprobe
        if not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe={nprobe} must be between 1 and nlist={nlist}")
        faiss = _faiss()
        quantizer = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        # Spherical k-means (FAISS sets it for inner product); FAISS draws the training sample.
        index.cp.seed = seed
        index.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_LIST
        index.cp.min_points_per_centroid = 1  # ivf_lists already keeps >= 39 points per list
        index.train(vectors)
        index.add(vectors)
        return cls(index, {"nlist": nlist, "nprobe": nprobe, "seed": seed}, fingerprint(vectors),
                   sample_fingerprint(vectors))

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    @property
    def nprobe(self) -> int:
        return int(self.parameters["nprobe"])

    def _effort(self, k: int) -> int:
        return self.nprobe

    def _max_effort(self) -> int:
        return self.nlist

    def _search_parameters(self, effort: int, selector=None):
        if selector is None:
            return _faiss().SearchParametersIVF(nprobe=effort)
        return _faiss().SearchParametersIVF(nprobe=effort, sel=selector)


_BUILDERS = {FAISS_HNSW: FaissHNSWBackend, FAISS_IVF: FaissIVFBackend}


# --- factory and persistence --------------------------------------------------------------

def build_backend(vectors: np.ndarray, kind: str = AUTO, *, faiss_min_vectors: int):
    """A search backend over ``vectors`` (unit float32 rows).

    ``kind``: "exact", "faiss-hnsw", "faiss-ivf", or "auto" (exact below ``faiss_min_vectors``
    vectors, faiss-hnsw at or above; the settings SEARCH_BACKEND and SEARCH_FAISS_MIN_VECTORS).
    FAISS backends are built here with their default parameters; save them with ``save``.
    """
    _check_kind(kind, faiss_min_vectors)  # before validating (and hashing) a large matrix
    vectors = check_unit_rows(vectors)
    resolved = resolve_kind(kind, vectors.shape[0], faiss_min_vectors=faiss_min_vectors)
    if resolved == EXACT:
        return ExactBackend(vectors)
    return _BUILDERS[resolved].build(vectors)


def load_backend(directory: str | Path, vectors: np.ndarray, kind: str = AUTO, *, faiss_min_vectors: int,
                 verify: str = VERIFY_SAMPLE):
    """The backend ``build_backend`` would give, read from ``directory`` when it was saved there.

    Exact search needs only ``vectors`` (searched in place: pass a memory map to share one copy
    per host). A FAISS index is read from ``<directory>/<kind>/`` memory-mapped (see
    :func:`read_saved`) when its manifest matches the vectors and the kind; when none was saved
    or it was built on other vectors (the settings or the library changed), it is built afresh
    and saved, with a warning in the log. An unreadable or inconsistent saved index is an error,
    not something to paper over.

    ``verify``: how the vectors are compared with the manifest. ``"sample"`` (the default):
    size, dimension and the SHA-256 of :data:`SAMPLE_ROWS` evenly spaced rows
    (:func:`sample_fingerprint`, recorded at build, when the full SHA-256 was computed over
    every row); ``"full"``: the SHA-256 of every row, which reads the whole library (17 s and
    4.9 GB of page cache at 1M x 1280). A manifest saved before the sample was recorded is
    always checked in full.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"unknown verify mode {verify!r}; choose one of {', '.join(VERIFY_MODES)}")
    _check_kind(kind, faiss_min_vectors)  # before validating (and hashing) a large matrix
    resolved = resolve_kind(kind, np.shape(vectors)[0], faiss_min_vectors=faiss_min_vectors)
    if resolved == EXACT:
        return ExactBackend(vectors)
    vectors = _check_shape(vectors)
    folder = Path(directory) / resolved
    manifest_path = folder / MANIFEST_FILE
    reason = None
    if not manifest_path.exists():
        reason = "none was saved"
    else:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read the search index manifest {manifest_path}: {error}") from error
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("kind") != resolved:
            raise ValueError(f"{manifest_path} is not a {resolved} manifest of format {MANIFEST_FORMAT}")
        if (manifest.get("size"), manifest.get("dimension")) != vectors.shape:
            reason = (f"the saved one holds {manifest.get('size')} x {manifest.get('dimension')} vectors, "
                      f"not {vectors.shape[0]} x {vectors.shape[1]}")
        elif verify == VERIFY_SAMPLE and manifest.get("vectors_sample_sha256") \
                and manifest.get("sample_rows") == SAMPLE_ROWS:
            if manifest["vectors_sample_sha256"] != sample_fingerprint(vectors):
                reason = "the saved one was built on other vectors (sampled rows differ)"
        elif manifest.get("vectors_sha256") != fingerprint(vectors):
            reason = "the saved one was built on other vectors"
    if reason is not None:
        logger.warning("building a %s search index over %s vectors in %s: %s", resolved, vectors.shape[0],
                       folder, reason)
        backend = _BUILDERS[resolved].build(vectors)
        backend.save(directory)
        return backend
    return read_saved(folder, manifest, resolved)


def _check_shape(vectors: np.ndarray) -> np.ndarray:
    """A float32 (n, d) array, unchanged (a memory map stays one); the rows are not read.

    A saved index's vectors were validated row by row when it was built; reading every row
    again at each worker start is what the memory map is there to avoid.
    """
    array = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
    if array.dtype != np.float32 or array.ndim != 2 or not array.flags.c_contiguous:
        return check_unit_rows(array)  # not an index's features.npy: converted (a copy) and validated
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"vectors must be a non-empty 2-D array (rows x dimension), got shape {array.shape}")
    return array


def read_saved(folder: str | Path, manifest: dict, kind: str):
    """The FAISS backend saved in ``folder``, its file memory-mapped (``IO_FLAG_MMAP_IFC``).

    Nothing of the index is copied into the process: the flat vectors, HNSW's graph links
    (levels, offsets, neighbours) and IVF's lists are views of ``index.faiss`` (measured:
    anonymous memory does not grow when a 1M x 1280 HNSW index is read), so the pages a search
    touches sit once in the host's page cache and every worker process shares them. Reading
    takes milliseconds; the first searches fault their pages in from disk. ``save`` replaces a
    saved index by renaming a new folder into place, which leaves a mapped file intact for the
    processes still using it. Such an index is read-only: FAISS aborts the process on an
    ``add`` to it.
    """
    folder = Path(folder)
    faiss = _faiss()
    try:
        index = faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as error:
        raise ValueError(f"cannot read the saved {kind} index in {folder}: {error}") from error
    expected = faiss.IndexHNSWFlat if kind == FAISS_HNSW else faiss.IndexIVFFlat
    if not isinstance(index, expected) or index.metric_type != faiss.METRIC_INNER_PRODUCT \
            or (index.ntotal, index.d) != (manifest["size"], manifest["dimension"]):
        raise ValueError(f"the saved index in {folder} ({type(index).__name__}, {index.ntotal} x {index.d}) "
                         f"does not match its manifest ({kind}, {manifest['size']} x {manifest['dimension']})")
    # Build-time parameters come from the manifest; search-time ones follow this module, so
    # retuning efSearch or nprobe needs no rebuild.
    parameters = dict(manifest.get("parameters", {}))
    if kind == FAISS_HNSW:
        parameters["ef_search"] = HNSW_EF_SEARCH
    else:
        parameters["nprobe"] = ivf_probes(int(index.ntotal), int(index.nlist))
    return _BUILDERS[kind](index, parameters, manifest["vectors_sha256"], manifest.get("vectors_sample_sha256"),
                           memory_mapped=True)


_read_saved = read_saved  # its earlier, private name
