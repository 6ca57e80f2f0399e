"""The Qdrant search backend: a collection of unit vectors with their cases' payload.

Qdrant shards and replicates a collection across machines (docs/scaling.md); ``qdrant-client``'s
local mode (``QdrantClient(":memory:")`` or ``path=``) runs the same API in process, which the
tests and a single-process embedded setup use. This module takes a client and a collection
name and never reads settings: which client and which collection is the caller's
(:mod:`retrieval.loaders`).

Points are the library rows: point id = row number, vector = the row (dot product: rows and
queries are unit vectors, so it is the cosine similarity the other backends return), payload =
the case's :data:`retrieval.ml.search.PAYLOAD_KEYS`. A :class:`~retrieval.ml.search.SearchFilter`
becomes a payload ``Filter`` evaluated by Qdrant while it searches. Results are ordered as the
other backends order them: best first, equal scores by library row.
"""
from __future__ import annotations

import numpy as np

from retrieval.ml.search import (
    QDRANT, SearchFilter, _check_k, _check_queries, _ordered, check_unit_rows,
)

UPSERT_BATCH = 512  # points per upsert request: bounds one request's body (512 x 1280 floats ~ 5 MB of JSON)
#: Payload fields given a keyword index on a server (filtered searches then use the index;
#: local mode has no indexes and scans, which is fine at its sizes).
KEYWORD_FIELDS = ("lesion_id", "patient_id", "site", "sex", "dataset", "diagnosis", "split")


def _models():
    from qdrant_client import models  # imported on first use: only a Qdrant deployment needs it

    return models


def collection_filter(where: SearchFilter | None):
    """The Qdrant payload ``Filter`` of ``where`` (None when it restricts nothing)."""
    if where is None or where.empty:
        return None
    models = _models()
    must, must_not = [], []
    if where.exclude_case_ids:
        must_not.append(models.FieldCondition(key="case_id", match=models.MatchAny(any=list(where.exclude_case_ids))))
    for key, values in (("lesion_id", where.exclude_lesion_ids), ("patient_id", where.exclude_patient_ids)):
        if values:
            must_not.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(values))))
    for key, values in (("site", where.sites), ("sex", where.sexes), ("dataset", where.datasets)):
        if values:
            must.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(values))))
    if where.age_min is not None or where.age_max is not None:
        # A point without an age (payload null) does not match a range: as the exact backend.
        must.append(models.FieldCondition(key="age", range=models.Range(gte=where.age_min, lte=where.age_max)))
    return models.Filter(must=must or None, must_not=must_not or None)


class QdrantBackend:
    """Search over one Qdrant collection (:meth:`create` writes it, :meth:`open` reads it)."""

    kind = QDRANT

    def __init__(self, client, collection: str, size: int, dimension: int) -> None:
        self.client = client
        self.collection = collection
        self._size = int(size)
        self._dimension = int(dimension)

    @property
    def size(self) -> int:
        return self._size

    @property
    def dimension(self) -> int:
        return self._dimension

    @classmethod
    def create(cls, client, collection: str, vectors: np.ndarray, payload: list[dict], *,
               on_disk: bool = False) -> QdrantBackend:
        """Write ``vectors`` (unit float32 rows) and their ``payload`` (one dict per row) as a new
        collection; an earlier collection of that name (a build that was interrupted and rerun)
        is replaced. ``on_disk`` keeps the vectors memory-mapped on the server instead of in RAM.
        """
        vectors = check_unit_rows(vectors)
        if len(payload) != vectors.shape[0]:
            raise ValueError(f"{len(payload)} payload rows for {vectors.shape[0]} vectors")
        models = _models()
        if client.collection_exists(collection):
            client.delete_collection(collection)
        client.create_collection(collection, vectors_config=models.VectorParams(
            size=int(vectors.shape[1]), distance=models.Distance.DOT, on_disk=on_disk or None))
        if not _is_local(client):
            for field in KEYWORD_FIELDS:
                client.create_payload_index(collection, field, field_schema=models.PayloadSchemaType.KEYWORD)
            for field in ("age", "case_id"):
                client.create_payload_index(collection, field, field_schema=models.PayloadSchemaType.INTEGER)
        for start in range(0, vectors.shape[0], UPSERT_BATCH):
            stop = min(start + UPSERT_BATCH, vectors.shape[0])
            client.upsert(collection, wait=True, points=models.Batch(
                ids=list(range(start, stop)), vectors=vectors[start:stop].tolist(), payloads=payload[start:stop]))
        backend = cls(client, collection, vectors.shape[0], vectors.shape[1])
        backend.check()
        return backend

    @classmethod
    def open(cls, client, collection: str, *, size: int, dimension: int) -> QdrantBackend:
        """The backend over an existing collection, checked against the index's size and dimension."""
        backend = cls(client, collection, size, dimension)
        backend.check()
        return backend

    def check(self) -> None:
        """ValueError unless the collection exists and holds ``size`` points of ``dimension``."""
        if not self.client.collection_exists(self.collection):
            raise ValueError(f"the Qdrant collection {self.collection!r} does not exist")
        info = self.client.get_collection(self.collection)
        vectors = info.config.params.vectors
        count = self.client.count(self.collection, exact=True).count
        if (count, vectors.size) != (self.size, self.dimension):
            raise ValueError(f"the Qdrant collection {self.collection!r} holds {count} x {vectors.size} vectors, "
                             f"not {self.size} x {self.dimension}")

    def search(self, queries: np.ndarray, k: int, *, where: SearchFilter | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 (n, k'), scores float32 (n, k')), best first, ties by library row;
        k' = min(k, points ``where`` allows)."""
        queries = _check_queries(queries, self.dimension)
        k = _check_k(k, self.size)
        models = _models()
        query_filter = collection_filter(where)
        # Exact (not HNSW) when filtered: a restrictive filter leaves Qdrant's graph search
        # short of k; unfiltered it is Qdrant's own index (exact below its indexing threshold).
        # (Local mode always searches exactly and warns about any search parameters.)
        params = models.SearchParams(exact=True) if query_filter is not None and not _is_local(self.client) else None
        answers = self.client.query_batch_points(self.collection, requests=[
            models.QueryRequest(query=row.tolist(), limit=k, filter=query_filter, params=params,
                                with_payload=False) for row in queries])
        found = min(len(answer.points) for answer in answers) if answers else 0
        if any(len(answer.points) != found for answer in answers):
            raise RuntimeError(f"Qdrant returned unequal numbers of neighbours for one filter from {self.collection!r}")
        if query_filter is None and found < k:
            raise RuntimeError(f"Qdrant returned {found} of {k} neighbours from {self.collection!r}")
        indices = np.array([[point.id for point in answer.points] for answer in answers], dtype=np.int64)
        scores = np.array([[point.score for point in answer.points] for answer in answers], dtype=np.float32)
        indices, scores = indices.reshape(len(queries), found), scores.reshape(len(queries), found)
        return _ordered(indices, scores)


def _is_local(client) -> bool:
    """Whether ``client`` runs qdrant-client's in-process local mode (no payload indexes there)."""
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


def drop_collections(client, names: list[str]) -> list[str]:
    """Delete the named collections that exist; returns those deleted."""
    dropped = []
    for name in names:
        if client.collection_exists(name):
            client.delete_collection(name)
            dropped.append(name)
    return dropped
