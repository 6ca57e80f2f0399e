"""Lesion-level bootstrap: confidence intervals and paired tests for per-query figures. Pure NumPy.

The unit of resampling is the **lesion**, not the image: HAM10000 has several photos of many
lesions, and photos of one lesion succeed or fail together, so resampling images would treat
correlated queries as independent and make the intervals too narrow. Each replicate draws, with
replacement, as many lesions as there are within each *stratum* (the lesions' class): the split
is stratified by class and grouped by lesion, so a replicate keeps the test split's class mix and
every class keeps queries in every replicate (a per-class P@k and the macro mean over classes are
then defined in all replicates). All of a drawn lesion's queries enter the replicate, as many
times as the lesion was drawn.

A figure that is a mean over a subset of queries (P@k of one class, accuracy, a class's
sensitivity) is, in a replicate, ``sum(weight * value) / sum(weight)`` over its queries, with a
query's weight the number of times its lesion was drawn. Macro means (AP@k, macro sensitivity)
are means over classes of those replicate means. Intervals are percentile intervals of the
replicates (Efron). Paired comparisons of two methods use the *same* replicates for both, so
the spread of the difference reflects only how the methods differ on the same queries; the
two-sided p of "no difference" is ``min(1, 2 min(P(d* <= 0), P(d* >= 0)))`` with the add-one
correction of Davison & Hinkley (1997, ch. 4), so it is never 0 and two identical methods get
exactly 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_REPLICATES = 2000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
#: Per-class figures on fewer test queries than this are marked in the reports: one query moves
#: such a class's P@k by 0.1 or more, and few lesions make the interval itself unreliable.
FEW_QUERIES = 10


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class Comparison:
    """A paired bootstrap comparison: ``difference`` = estimate(A) - estimate(B) on the same queries."""

    difference: float
    low: float
    high: float
    p: float

    def as_dict(self) -> dict:
        return {"difference": self.difference, "ci": [self.low, self.high], "p": self.p}


@dataclass
class ScoreIntervals:
    """Intervals of one method's AP@k and per-class P@k (classes with queries), by cut-off."""

    ap: dict[int, Interval]
    per_class: dict[str, dict[int, Interval]]


@dataclass
class MethodUncertainty:
    standard: ScoreIntervals
    lesion_aware: ScoreIntervals | None = None
    #: Paired against the reference method: {"ap": {k: Comparison}, "per_class": {code: {k: Comparison}}};
    #: None for the reference itself.
    vs_reference: dict | None = None


@dataclass
class Uncertainty:
    """What the reports print next to the retrieval scores (``retrieval.ml.report``)."""

    methods: dict[str, MethodUncertainty]
    reference: str | None
    level: float = DEFAULT_LEVEL
    few_queries: int = FEW_QUERIES
    bootstrap: dict = field(default_factory=dict)  # LesionBootstrap.describe()


class LesionBootstrap:
    """Replicate weights of the queries, drawn once and shared by every figure and method.

    ``lesions[i]`` and ``strata[i]`` are query i's lesion id and stratum (its class). A lesion
    whose queries fall in several strata (not in HAM10000: a lesion has one diagnosis) forms a
    stratum of its own combination, so the draw stays well defined.
    """

    def __init__(self, lesions: Sequence[str], strata: Sequence[str], *, replicates: int = DEFAULT_REPLICATES,
                 seed: int = DEFAULT_SEED) -> None:
        if len(lesions) != len(strata):
            raise ValueError(f"{len(lesions)} lesion ids but {len(strata)} strata")
        if not len(lesions):
            raise ValueError("no queries to resample")
        if replicates < 1:
            raise ValueError(f"at least one bootstrap replicate is needed, got {replicates}")
        self.replicates, self.seed = int(replicates), int(seed)
        self.lesion_ids = sorted(set(lesions))
        position = {lesion: index for index, lesion in enumerate(self.lesion_ids)}
        self.query_lesion = np.array([position[lesion] for lesion in lesions], dtype=np.int64)
        lesion_strata: dict[str, set[str]] = {}
        for lesion, stratum in zip(lesions, strata):
            lesion_strata.setdefault(lesion, set()).add(stratum)
        stratum_of = {lesion: "+".join(sorted(found)) for lesion, found in lesion_strata.items()}
        groups: dict[str, list[int]] = {}
        for lesion in self.lesion_ids:
            groups.setdefault(stratum_of[lesion], []).append(position[lesion])
        self.strata = {name: np.array(members) for name, members in sorted(groups.items())}
        rng = np.random.default_rng(self.seed)
        weights = np.zeros((self.replicates, len(self.lesion_ids)), dtype=np.float64)
        for members in self.strata.values():  # sorted order: the draw depends on the seed only
            drawn = rng.integers(0, len(members), size=(self.replicates, len(members)))
            flat = drawn + len(members) * np.arange(self.replicates)[:, None]
            counts = np.bincount(flat.ravel(), minlength=self.replicates * len(members))
            weights[:, members] = counts.reshape(self.replicates, len(members))
        self.weights = weights  # (B, L): times each lesion was drawn in each replicate
        self.n_queries = len(lesions)

    @property
    def n_lesions(self) -> int:
        return len(self.lesion_ids)

    def _lesion_sums(self, values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sums = np.zeros((self.n_lesions, values.shape[1]))
        np.add.at(sums, self.query_lesion[mask], values[mask])
        counts = np.bincount(self.query_lesion[mask], minlength=self.n_lesions).astype(np.float64)
        return sums, counts

    def mean(self, values, mask=None) -> tuple[np.ndarray, np.ndarray]:
        """(estimate (K,), replicates (B, K)) of the mean of ``values`` (n,) or (n, K) over the
        queries in ``mask`` (default all). A replicate without such queries is NaN."""
        values = np.asarray(values, dtype=np.float64)
        single = values.ndim == 1
        values = values[:, None] if single else values
        if values.shape[0] != self.n_queries:
            raise ValueError(f"{values.shape[0]} values for {self.n_queries} queries")
        mask = np.ones(self.n_queries, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError("no queries in the subset")
        sums, counts = self._lesion_sums(values, mask)
        estimate = sums.sum(axis=0) / counts.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates = (self.weights @ sums) / (self.weights @ counts)[:, None]
        if single:
            return estimate[0:1], replicates[:, 0:1]
        return estimate, replicates

    def class_means(self, values, labels: Sequence[str], classes: Sequence[str]):
        """{class: (estimate, replicates)} of the mean of ``values`` over each class's queries
        (classes without queries are left out), and the macro mean over them."""
        labels = np.asarray(labels)
        per_class = {code: self.mean(values, labels == code) for code in classes if np.any(labels == code)}
        if not per_class:
            raise ValueError("no class has queries")
        estimate = np.mean([est for est, _ in per_class.values()], axis=0)
        with np.errstate(invalid="ignore"):
            replicates = np.nanmean(np.stack([reps for _, reps in per_class.values()]), axis=0)
        return per_class, (estimate, replicates)

    def weighted_abs_sum(self, values, bins: np.ndarray, n_bins: int) -> tuple[float, np.ndarray]:
        """Estimate and replicates of ``sum_b |sum_{i in b} v_i| / n`` (an ECE with
        ``v = correct - confidence`` and ``bins`` each query's bin)."""
        values = np.asarray(values, dtype=np.float64)
        sums = np.zeros((self.n_lesions, n_bins))
        np.add.at(sums, (self.query_lesion, np.asarray(bins)), values)
        counts = np.bincount(self.query_lesion, minlength=self.n_lesions).astype(np.float64)
        estimate = float(np.abs(sums.sum(axis=0)).sum() / counts.sum())
        replicates = np.abs(self.weights @ sums).sum(axis=1) / (self.weights @ counts)
        return estimate, replicates

    def describe(self) -> dict:
        return {"replicates": self.replicates, "seed": self.seed, "unit": "lesion", "stratified_by": "class",
                "n_lesions": self.n_lesions, "n_queries": self.n_queries, "interval": "percentile",
                "p_value": "two-sided paired bootstrap, min(1, 2 min(P(d*<=0), P(d*>=0))), add-one corrected"}


def interval(replicates, level: float = DEFAULT_LEVEL) -> list[Interval]:
    """Percentile intervals, one per column of (B, K) replicates (NaN replicates left out)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    replicates = np.asarray(replicates, dtype=np.float64)
    replicates = replicates[:, None] if replicates.ndim == 1 else replicates
    tail = (1 - level) / 2
    out = []
    for column in replicates.T:
        finite = column[np.isfinite(column)]
        if not len(finite):
            out.append(Interval(float("nan"), float("nan")))
            continue
        low, high = np.quantile(finite, [tail, 1 - tail])
        out.append(Interval(float(low), float(high)))
    return out


def paired_p(differences) -> float:
    """Two-sided bootstrap p of "no difference" from replicate differences (one column)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return float("nan")
    below = (1 + np.count_nonzero(d <= 0)) / (1 + len(d))
    above = (1 + np.count_nonzero(d >= 0)) / (1 + len(d))
    return float(min(1.0, 2 * min(below, above)))


def compare(estimate_a, replicates_a, estimate_b, replicates_b, level: float = DEFAULT_LEVEL) -> list[Comparison]:
    """Paired comparisons A - B per column, from replicates drawn with the same weights."""
    estimate = np.atleast_1d(np.asarray(estimate_a, dtype=np.float64) - np.asarray(estimate_b, dtype=np.float64))
    differences = np.asarray(replicates_a, dtype=np.float64) - np.asarray(replicates_b, dtype=np.float64)
    differences = differences[:, None] if differences.ndim == 1 else differences
    intervals = interval(differences, level)
    return [Comparison(float(d), i.low, i.high, paired_p(column))
            for d, i, column in zip(estimate, intervals, differences.T)]


def retrieval_uncertainty(draw: LesionBootstrap, query_labels: Sequence[str], ks: Sequence[int], hits: dict, *,
                          classes: Sequence[str], level: float = DEFAULT_LEVEL,
                          reference: str | None = None) -> Uncertainty:
    """Intervals of per-class P@k and AP@k and paired comparisons against ``reference``, from
    per-query hit matrices ``{method: (standard (n, K), lesion-aware (n, K) or None)}`` whose
    rows are the queries of ``draw`` (:func:`retrieval.ml.metrics.query_precision`)."""
    ks = list(ks)

    def intervals(per_class, macro) -> ScoreIntervals:
        return ScoreIntervals(ap=dict(zip(ks, interval(macro[1], level))),
                              per_class={code: dict(zip(ks, interval(reps, level)))
                                         for code, (_, reps) in per_class.items()})

    spreads = {name: (draw.class_means(standard, query_labels, classes),
                      None if lesion is None else draw.class_means(lesion, query_labels, classes))
               for name, (standard, lesion) in hits.items()}
    if reference not in spreads:
        reference = None
    methods = {}
    for name, ((per_class, macro), lesion_spread) in spreads.items():
        versus = None
        if reference is not None and name != reference:
            ref_class, ref_macro = spreads[reference][0]
            versus = {"ap": dict(zip(ks, compare(macro[0], macro[1], ref_macro[0], ref_macro[1], level))),
                      "per_class": {code: dict(zip(ks, compare(est, reps, *ref_class[code], level)))
                                    for code, (est, reps) in per_class.items() if code in ref_class}}
        methods[name] = MethodUncertainty(intervals(per_class, macro),
                                          None if lesion_spread is None else intervals(*lesion_spread), versus)
    return Uncertainty(methods=methods, reference=reference, level=level, bootstrap=draw.describe())
