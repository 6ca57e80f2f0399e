"""How each retrieval method (registry: :mod:`retrieval.methods`) scores the library for a query.

Scores are "higher is more similar". Scores normalised over the library (Euclidean's d_max,
style's L_max) are computed over the whole library for each query, as in paper 000, so a method
scores every library case and takes the top k (exact search; a 10k library costs milliseconds,
see ``bench/measures.py``). SE-CBIR keeps its own search backends (exact or FAISS).
"""
from __future__ import annotations

import numpy as np

from retrieval.methods import CNN3, CONTRASTIVE, MASK, SECBIR, STYLE, TRIPLET, get_method


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a feature vector is all zeros and has no direction")
    return vectors / norms


def _component(name: str, query: dict, library: dict) -> np.ndarray:
    from retrieval.ml import measures

    if name == "euclidean":
        return measures.euclidean_scores(query[CNN3], library[CNN3])
    if name == "cosine":
        return measures.cosine_scores(query[CNN3], library[CNN3])
    if name == "style":
        return measures.style_scores(query[STYLE], library[STYLE])
    if name == "dice":
        return measures.dice_scores(query[MASK], library[MASK])
    raise ValueError(f"unknown component score {name!r}")


def method_scores(name: str, query: dict[str, np.ndarray], library: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) float64 scores of every library row for one query, higher = more similar.

    ``query[d]`` is one image's descriptor d (a vector; for ``mask`` a bool map), ``library[d]``
    the library's rows of it (for ``mask`` bit-packed, see ``measures.pack_masks``).
    """
    from retrieval.ml import measures

    method = get_method(name)
    missing = [d for d in method.needs if d not in query or d not in library]
    if missing:
        raise ValueError(f"method {name!r} needs the descriptors {', '.join(missing)}")
    if name in (SECBIR, CONTRASTIVE, TRIPLET):
        return (np.asarray(library[name], dtype=np.float32) @ _unit(query[name])).astype(np.float64)
    if name == CNN3:
        return measures.cosine_similarities(query[CNN3], library[CNN3])
    if name in ("euclidean", "cosine", "style"):
        return np.asarray(_component(name, query, library), dtype=np.float64)
    parts = measures.I1_COMPONENTS[name]
    return np.asarray(measures.i1(*[_component(part, query, library) for part in parts]), dtype=np.float64)


#: Base seed of the tie-break of equal scores; ``evaluate_retrieval --tie-seed`` changes it.
TIE_SEED = 0


def query_tie_seed(query: dict[str, np.ndarray], tie_seed: int = TIE_SEED) -> int:
    """The seed of one query's tie-break: a hash of ``tie_seed`` and the query's descriptors.

    The same image gets the same order of tied cases every time (in the product and in the
    evaluation alike), while different queries get independent orders, so no library case wins
    every tie.
    """
    import hashlib

    digest = hashlib.blake2b(str(int(tie_seed)).encode(), digest_size=8)
    for name in sorted(query):
        value = np.ascontiguousarray(query[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
        digest.update(value.tobytes())
    return int.from_bytes(digest.digest(), "little")


def method_topk(name: str, query: dict, library: dict, k: int, *,
                exclude: np.ndarray | None = None, tie_seed: int = TIE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Rows (k,) and scores (k,) of the k most similar library rows, best first.

    Equal scores are put in a seeded random order (:func:`retrieval.ml.measures.top_k` with
    :func:`query_tie_seed`), not in library order: the discrete scores (Dice, I1-scores with a
    zero component) tie often, and library order would favour the class imported first.
    ``exclude`` is a boolean mask of rows that must not be returned (e.g. the query's own lesion).
    """
    from retrieval.ml.measures import top_k

    scores = method_scores(name, query, library)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    available = int(np.isfinite(scores).sum())
    if not 1 <= k <= available:
        raise ValueError(f"k={k} but the library offers only {available} candidates")
    needs = get_method(name).needs
    return top_k(scores, k, tie_seed=query_tie_seed({d: query[d] for d in needs}, tie_seed))
