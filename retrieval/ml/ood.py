"""Out-of-distribution (OOD) scores of SE-CBIR queries: candidates, metrics, threshold, selection.

Pure NumPy, no Django. Every score is oriented the same way: **higher = more like the case
library**; a query is warned about when its score is **below** the threshold.

Candidates (all computed from what one query already costs: the SE-CBIR search and the
3-channel model's logits of the saliency pass, plus one small matrix product):

* ``best_cosine``: the cosine similarity of the nearest library vector (the original rule).
* ``knn_cosine``: the mean cosine of the ``k`` nearest library vectors (``KNN_K``; a k-th-nearest
  neighbour distance on normalised features, Sun et al. 2022, averaged over the k to be less
  noisy on a small library).
* ``msp3``: the 3-channel classifier's maximum softmax probability (Hendrycks & Gimpel 2017).
* ``energy3``: its negative free energy ``T logsumexp(logits / T)``, T = 1 (Liu et al. 2020).
* ``mahalanobis``: minus the smallest class-conditional Mahalanobis distance (squared) of the
  SE-CBIR features, class means and one shared covariance fitted on library features (Lee et
  al. 2018), shrunk towards a scaled identity by the Ledoit-Wolf (2004) estimate because the
  library is not much larger than the feature dimension.
* ``combined``: the mean of ``knn_cosine``, ``mahalanobis`` and ``energy3`` after standardising
  each by its mean and standard deviation on in-distribution calibration images (fixed parts,
  chosen before any figure was seen; only the standardisation is fitted).

The threshold is split-conformal: with ``n`` in-distribution calibration scores and a target
false-warning rate ``alpha``, it is the ``k``-th smallest score, ``k = floor(alpha (n + 1))``
(at least 1). A new in-distribution image (exchangeable with the calibration images) is then
warned with probability ``k / (n + 1) <= alpha`` (Vovk et al. 2005; Angelopoulos & Bates 2021).

Choosing the score by evidence (:func:`select_score`) is honest about the choice: the
in-distribution images and the evaluation set are each split into a *select* half and a
*report* half (whole lesions and whole image groups on one side, stratified by source and kind,
by a stable hash). The threshold and the choice use the select half only; the figures reported
for every candidate (AUROC, share of out-of-distribution images warned, share of held-out
in-distribution images warned) come from the report half, which neither saw.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BEST_COSINE = "best_cosine"
KNN_COSINE = "knn_cosine"
MSP3 = "msp3"
ENERGY3 = "energy3"
MAHALANOBIS = "mahalanobis"
COMBINED = "combined"
#: In order of preference when the evidence is tied (the simplest first).
CANDIDATES = (BEST_COSINE, KNN_COSINE, MSP3, ENERGY3, MAHALANOBIS, COMBINED)
DESCRIPTIONS = {
    BEST_COSINE: "cosine similarity of the nearest library image (SE-CBIR features)",
    KNN_COSINE: "mean cosine similarity of the {k} nearest library images (SE-CBIR features)",
    MSP3: "maximum softmax probability of the 3-channel classifier",
    ENERGY3: "negative free energy (logsumexp of the logits) of the 3-channel classifier",
    MAHALANOBIS: "minus the smallest class-conditional Mahalanobis distance of the SE-CBIR features "
                 "(shared covariance, Ledoit-Wolf shrinkage)",
    COMBINED: "mean of the standardised knn_cosine, mahalanobis and energy3 scores",
}
KNN_K = 10
COMBINED_PARTS = (KNN_COSINE, MAHALANOBIS, ENERGY3)
#: At most this share of in-distribution queries is warned (the conformal bound).
TARGET_FALSE_WARNING = 0.05
#: Needs of each candidate: nearest similarities, 3-channel logits, Mahalanobis statistics.
NEEDS = {BEST_COSINE: {"similarities"}, KNN_COSINE: {"similarities"}, MSP3: {"logits"}, ENERGY3: {"logits"},
         MAHALANOBIS: {"mahalanobis"}, COMBINED: {"similarities", "logits", "mahalanobis"}}


# --- Scores ---------------------------------------------------------------------------------

def best_cosine(similarities: np.ndarray) -> np.ndarray:
    """(n, m) similarities of each query's nearest library vectors, best first -> (n,)."""
    return np.asarray(similarities, dtype=np.float64)[:, 0]


def knn_cosine(similarities: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Mean of each row's ``k`` best similarities (all of them when a row has fewer)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    return np.asarray(similarities, dtype=np.float64)[:, :k].mean(axis=1)


def max_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    return probabilities.max(axis=1) / probabilities.sum(axis=1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T logsumexp(logits / T)`` (higher = more in-distribution)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1)
    return temperature * (top + np.log(np.exp(scaled - top[:, None]).sum(axis=1)))


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """Ledoit & Wolf's (2004) optimal weight of the scaled identity for centred rows (n, d).

    The same estimate as scikit-learn's ``ledoit_wolf_shrinkage`` (one block)."""
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    squared = x ** 2
    trace_terms = squared.sum(axis=0) / n  # diagonal of the empirical covariance
    mu = trace_terms.sum() / d
    beta_sum = float((squared.T @ squared).sum())
    delta_sum = float(((x.T @ x) ** 2).sum()) / n ** 2
    beta = (beta_sum / n - delta_sum) / (d * n)
    delta = (delta_sum - 2 * mu * trace_terms.sum() + d * mu ** 2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 or delta <= 0 else float(beta / delta)


@dataclass
class MahalanobisModel:
    """Class means and the precision of one shared, shrunk covariance (Lee et al. 2018)."""

    means: np.ndarray  # (C, d) of the classes present, float64 holding float32 values (as stored)
    precision: np.ndarray  # (d, d), the same
    shrinkage: float
    n: int  # library rows fitted on

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> MahalanobisModel:
        """Fit on library features (n, d) and their class labels (n,)."""
        x = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        if len(x) < 2:
            raise ValueError("the Mahalanobis model needs at least two library vectors")
        classes = np.unique(labels)
        means = np.stack([x[labels == c].mean(axis=0) for c in classes])
        centred = x - means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / len(x)
        shrinkage = ledoit_wolf_shrinkage(centred)
        scale = np.trace(covariance) / x.shape[1]
        if scale <= 0:  # every vector equals its class mean: any positive scale keeps the ranking
            scale, shrinkage = 1.0, 1.0
        shrunk = (1 - shrinkage) * covariance + shrinkage * scale * np.eye(x.shape[1])
        precision = np.linalg.inv(shrunk)
        # rounded to float32 as the file stores them, so that a loaded model scores exactly as this one
        return cls(_as_stored(means), _as_stored((precision + precision.T) / 2), shrinkage, len(x))

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance (n, C) of each row to each class mean."""
        x = np.asarray(features, dtype=np.float64)
        precision, means = self.precision, self.means
        projected_means = means @ precision
        quad_x = np.einsum("nd,de,ne->n", x, precision, x)
        quad_m = np.einsum("cd,cd->c", projected_means, means)
        return np.maximum(quad_x[:, None] - 2 * x @ projected_means.T + quad_m[None, :], 0.0)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Minus the smallest squared distance over classes (n,): higher = more like the library."""
        return -self.distances(features).min(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means.astype(np.float32), "precision": self.precision.astype(np.float32),
                "shrinkage": np.float64(self.shrinkage), "n": np.int64(self.n)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> MahalanobisModel:
        return cls(_as_stored(arrays["means"]), _as_stored(arrays["precision"]), float(arrays["shrinkage"]),
                   int(arrays["n"]))


def _as_stored(array: np.ndarray) -> np.ndarray:
    """float64 computation on the float32 values a statistics file holds."""
    return np.asarray(array, dtype=np.float32).astype(np.float64)


def fit_combination(scores: Mapping[str, np.ndarray], parts: Sequence[str] = COMBINED_PARTS) -> dict:
    """Standardisation of each part (its mean and standard deviation on in-distribution scores)."""
    params = {"parts": list(parts), "mean": {}, "std": {}}
    for part in parts:
        values = np.asarray(scores[part], dtype=np.float64)
        params["mean"][part] = float(values.mean())
        params["std"][part] = float(values.std()) or 1.0
    return params


def combined(scores: Mapping[str, np.ndarray], params: Mapping) -> np.ndarray:
    return np.mean([(np.asarray(scores[p], np.float64) - params["mean"][p]) / params["std"][p]
                    for p in params["parts"]], axis=0)


def candidate_scores(*, similarities: np.ndarray | None = None, logits: np.ndarray | None = None,
                     features: np.ndarray | None = None, mahalanobis: MahalanobisModel | None = None,
                     k: int = KNN_K, combination: Mapping | None = None,
                     names: Sequence[str] = CANDIDATES) -> dict[str, np.ndarray]:
    """Every asked-for candidate score (n,) of a batch: the one code path of calibration and queries.

    ``similarities``: (n, m) best-first cosines to the library (m >= k); ``logits``: (n, C) of the
    3-channel model; ``features`` + ``mahalanobis``: SE-CBIR features and the fitted model;
    ``combination``: :func:`fit_combination`'s parameters (needed for ``combined`` only).
    """
    out: dict[str, np.ndarray] = {}
    wanted = set(names)
    if COMBINED in wanted:
        wanted |= set(COMBINED_PARTS)
    if BEST_COSINE in wanted:
        out[BEST_COSINE] = best_cosine(similarities)
    if KNN_COSINE in wanted:
        out[KNN_COSINE] = knn_cosine(similarities, k)
    if MSP3 in wanted:
        out[MSP3] = max_softmax(logits)
    if ENERGY3 in wanted:
        out[ENERGY3] = energy(logits)
    if MAHALANOBIS in wanted:
        if mahalanobis is None or features is None:
            raise ValueError("the Mahalanobis score needs the features and the fitted model")
        out[MAHALANOBIS] = mahalanobis.score(features)
    if COMBINED in wanted:
        if combination is None:
            raise ValueError("the combined score needs its standardisation (fit_combination)")
        out[COMBINED] = combined(out, combination)
    return {name: out[name] for name in names}


# --- Metrics ----------------------------------------------------------------------------------

def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        stop = start + 1
        while stop < len(values) and sorted_values[stop] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop]] = (start + 1 + stop) / 2
        start = stop
    return ranks


def auroc(in_scores: Sequence[float], out_scores: Sequence[float]) -> float | None:
    """P(an in-distribution score > an out-of-distribution score), ties counted one half.

    The Mann-Whitney statistic U of the in-distribution scores over n_in n_out pairs; 1.0 = every
    out-of-distribution image scores below every in-distribution one, 0.5 = no separation. None
    when either side is empty."""
    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    if not len(a) or not len(b):
        return None
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores must be finite")
    ranks = _midranks(np.concatenate([a, b]))
    u = ranks[:len(a)].sum() - len(a) * (len(a) + 1) / 2
    return float(u / (len(a) * len(b)))


def warned_share(scores: Sequence[float], threshold: float) -> float | None:
    """Share of scores strictly below the threshold (None for no scores)."""
    values = np.asarray(scores, dtype=np.float64)
    return float(np.mean(values < threshold)) if len(values) else None


def conformal_threshold(in_scores: Sequence[float], target: float = TARGET_FALSE_WARNING) -> tuple[float, float]:
    """(threshold, bound): the k-th smallest in-distribution score, k = max(1, floor(target (n + 1))),
    and ``k / (n + 1)``, the probability that a new in-distribution image scores below it.

    With fewer than ``1 / target - 1`` scores the bound exceeds the target (k cannot be 0
    without giving up the warning); callers show the bound."""
    values = np.sort(np.asarray(in_scores, dtype=np.float64))
    if not len(values):
        raise ValueError("no in-distribution scores to calibrate on")
    if not 0 < target < 1:
        raise ValueError("the target rate must be between 0 and 1")
    k = max(1, math.floor(target * (len(values) + 1) + 1e-9))
    return float(values[k - 1]), k / (len(values) + 1)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def evaluate(in_scores: np.ndarray, out_scores: np.ndarray, out_kinds: Sequence[str], threshold: float,
             in_sources: Sequence[str] | None = None) -> dict:
    """AUROC and warned shares at ``threshold``: out-of-distribution overall, per kind and the mean over
    kinds (``ood_warned_macro``); in-distribution overall and per source."""
    in_scores = np.asarray(in_scores, dtype=np.float64)
    out_scores = np.asarray(out_scores, dtype=np.float64)
    kinds = np.asarray(list(out_kinds))
    per_kind = {str(kind): warned_share(out_scores[kinds == kind], threshold) for kind in sorted(set(kinds.tolist()))}
    result = {
        "n_in": int(len(in_scores)), "n_out": int(len(out_scores)),
        "auroc": auroc(in_scores, out_scores),
        "ood_warned": warned_share(out_scores, threshold),
        "ood_warned_per_kind": per_kind,
        "ood_warned_macro": _mean([share for share in per_kind.values() if share is not None]),
        "id_warned": warned_share(in_scores, threshold),
    }
    if in_sources is not None:
        sources = np.asarray(list(in_sources))
        result["id_warned_per_source"] = {str(s): warned_share(in_scores[sources == s], threshold)
                                          for s in sorted(set(sources.tolist()))}
    return result


# --- Honest selection -------------------------------------------------------------------------

def _stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def select_half(groups: Sequence[str], strata: Sequence[str] | None = None) -> np.ndarray:
    """Bool mask of the *select* half (the rest is the *report* half).

    Items of one group (a lesion, an image family) stay on one side. Within each stratum (a
    source or a kind) the groups are ordered by a hash of their name and alternate between the
    halves, so the halves are balanced, stable for the same names and unrelated to the scores."""
    groups = [str(g) for g in groups]
    strata = ["" for _ in groups] if strata is None else [str(s) for s in strata]
    side: dict[tuple[str, str], bool] = {}
    for stratum in sorted(set(strata)):
        names = sorted({g for g, s in zip(groups, strata) if s == stratum}, key=lambda g: (_stable_hash(g), g))
        for position, name in enumerate(names):
            side[(stratum, name)] = position % 2 == 0
    return np.array([side[(s, g)] for g, s in zip(groups, strata)], dtype=bool)


@dataclass
class Selection:
    method: str
    threshold: float
    bound: float  # conformal bound of the false-warning rate at that threshold
    candidates: dict  # name -> {"threshold", "bound", "select": evaluate(...), "report": evaluate(...)}

    @property
    def report(self) -> dict:
        return self.candidates[self.method]["report"]


def select_score(in_scores: Mapping[str, np.ndarray], out_scores: Mapping[str, np.ndarray], *,
                 in_select: np.ndarray, out_select: np.ndarray, out_kinds: Sequence[str],
                 in_sources: Sequence[str] | None = None, target: float = TARGET_FALSE_WARNING,
                 order: Sequence[str] = CANDIDATES) -> Selection:
    """Choose the score that warns the most out-of-distribution images of the select half.

    For each candidate: threshold = :func:`conformal_threshold` of its select-half in-distribution
    scores; evidence = the mean over kinds of the share of select-half out-of-distribution images
    warned at that threshold (every kind counts the same, whatever its size); ties go to the higher
    select-half AUROC, then to the earlier candidate in ``order``. Figures are reported on both
    halves; the chosen candidate's report half is the honest estimate.
    """
    in_select = np.asarray(in_select, dtype=bool)
    out_select = np.asarray(out_select, dtype=bool)
    kinds = np.asarray(list(out_kinds))
    sources = None if in_sources is None else np.asarray(list(in_sources))
    if not in_select.any() or not out_select.any():
        raise ValueError("the select half needs in-distribution and out-of-distribution images")
    figures, ranking = {}, []
    for position, name in enumerate(n for n in order if n in in_scores):
        a, b = np.asarray(in_scores[name], np.float64), np.asarray(out_scores[name], np.float64)
        threshold, bound = conformal_threshold(a[in_select], target)
        halves = {}
        for half, mine_in, mine_out in (("select", in_select, out_select), ("report", ~in_select, ~out_select)):
            halves[half] = evaluate(a[mine_in], b[mine_out], kinds[mine_out], threshold,
                                    None if sources is None else sources[mine_in])
        figures[name] = {"threshold": threshold, "bound": bound, **halves}
        select = halves["select"]
        ranking.append((-(select["ood_warned_macro"] or 0.0), -(select["auroc"] or 0.0), position, name))
    if not ranking:
        raise ValueError("no candidate scores")
    chosen = min(ranking)[3]
    return Selection(chosen, figures[chosen]["threshold"], figures[chosen]["bound"], figures)
