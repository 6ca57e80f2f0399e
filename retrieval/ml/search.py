"""Cosine top-k search over L2-normalised feature matrices, exact, with stable tie-breaking."""
from __future__ import annotations

import numpy as np

_CHUNK = 256  # queries per block: bounds the (queries x library) score matrix in memory


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
