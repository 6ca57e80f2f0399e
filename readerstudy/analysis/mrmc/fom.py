"""Figures of merit per (treatment, reader) and the covariance of their estimates.

- ``auc``: empirical (trapezoidal) area under the ROC curve of the ratings, i.e. the
  Mann-Whitney-Wilcoxon statistic with ties counted one half (Hanley & McNeil 1982).
- ``accuracy``: proportion correct of binary correctness (rating 1 correct, 0 wrong; truth unused).
- ``sensitivity`` / ``specificity``: share of positive / negative cases called positive /
  negative, a case being called positive when its rating >= the threshold.

Covariance of the estimates over cases, as OR-DBM MRMC and MRMCaov compute it:

- ``jackknife`` (default): delete one case at a time (Efron 1982): Cov = (N-1)/N * sum_k
  (theta(-k) - mean)(theta(-k) - mean)', N the cases of the study. A reader's figure does not
  change when a case they did not rate is left out, which is how nested designs are jackknifed.
- ``delong`` (AUC of a factorial design): DeLong, DeLong & Clarke-Pearson (1988) structural
  components, Cov = S10/m + S01/n.
"""
from __future__ import annotations

import numpy as np

from readerstudy.analysis.mrmc.data import FACTORIAL, DesignRefused, Study

FIGURES_OF_MERIT = {
    "auc": "empirical (trapezoidal) area under the ROC curve of the ratings (Wilcoxon statistic, ties one half)",
    "accuracy": "proportion correct (rating 1 correct, 0 wrong)",
    "sensitivity": "sensitivity: share of positive cases rated at or above the threshold",
    "specificity": "specificity: share of negative cases rated below the threshold",
}
COVARIANCES = {
    "jackknife": "jackknife over cases (Efron 1982), as in OR-DBM MRMC and MRMCaov",
    "delong": "DeLong, DeLong & Clarke-Pearson (1988) structural components (AUC, factorial designs)",
}
DEFAULT_THRESHOLD = 0.5
#: The cases a figure of merit is computed on, where it is not all of them.
TRUTH_OF = {"sensitivity": 1, "specificity": 0}


def check(study: Study, fom: str, covariance: str) -> None:
    """``DesignRefused`` unless ``fom`` can be estimated (and jackknifed) on every reader's cases."""
    if fom not in FIGURES_OF_MERIT:
        raise DesignRefused(f"unknown figure of merit {fom!r}; one of {', '.join(FIGURES_OF_MERIT)}")
    if covariance not in COVARIANCES:
        raise DesignRefused(f"unknown covariance method {covariance!r}; one of {', '.join(COVARIANCES)}")
    if covariance == "delong" and (fom != "auc" or study.design != FACTORIAL):
        raise DesignRefused("DeLong covariance is defined for the AUC of a factorial (fully crossed) design; "
                            "use the jackknife")
    for reader, rc in zip(study.readers, study.by_reader):
        truth = study.truth[rc.cases]
        positives, negatives = int(truth.sum()), int(len(truth) - truth.sum())
        need = {"auc": (2, 2), "accuracy": (0, 0), "sensitivity": (2, 0), "specificity": (0, 2)}[fom]
        if fom == "accuracy" and len(truth) < 2:
            raise DesignRefused(f"reader {reader!r} rated {len(truth)} case(s); the jackknife needs at least 2")
        if positives < need[0] or negatives < need[1]:
            raise DesignRefused(
                f"reader {reader!r} rated {positives} positive and {negatives} negative case(s); the {fom} "
                f"and its jackknife need at least {need[0]} positive and {need[1]} negative cases per reader")
        if fom == "accuracy" and not np.isin(rc.ratings, (0.0, 1.0)).all():
            raise DesignRefused(f"for accuracy every rating is 1 (correct) or 0 (wrong); reader {reader!r} has "
                                f"other values")


def figures_and_jackknife(study: Study, fom: str, threshold: float = DEFAULT_THRESHOLD
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``theta[treatment, reader]`` and ``jack[case, treatment, reader]``: each figure with case k left out."""
    n_treatments, n_readers = len(study.treatments), len(study.readers)
    theta = np.empty((n_treatments, n_readers))
    jack = np.empty((study.n_cases, n_treatments, n_readers))
    for j, rc in enumerate(study.by_reader):
        truth = study.truth[rc.cases].astype(bool)
        for i in range(n_treatments):
            value, dropped = _figure_dropping_each(fom, rc.ratings[i], truth, threshold)
            theta[i, j] = value
            jack[:, i, j] = value  # cases the reader did not rate leave the figure as it is
            jack[rc.cases, i, j] = dropped
    return theta, jack


def _figure_dropping_each(fom: str, x: np.ndarray, truth: np.ndarray, threshold: float
                          ) -> tuple[float, np.ndarray]:
    """The figure of ratings ``x`` and, for each case, the figure without it (closed forms)."""
    if fom == "auc":
        psi = placements(x[truth], x[~truth])
        m, n = psi.shape
        value = float(psi.mean())
        dropped = np.empty(len(x))
        dropped[truth] = (m * value - psi.mean(axis=1)) / (m - 1)
        dropped[~truth] = (n * value - psi.mean(axis=0)) / (n - 1)
        return value, dropped
    if fom == "accuracy":
        k = len(x)
        value = float(x.mean())
        return value, (k * value - x) / (k - 1)
    called = x >= threshold
    within = truth if fom == "sensitivity" else ~truth
    hits = called if fom == "sensitivity" else ~called
    k = int(within.sum())
    value = float(hits[within].mean())
    dropped = np.full(len(x), value)
    dropped[within] = (k * value - hits[within]) / (k - 1)
    return value, dropped


def placements(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """psi[a, b] = 1 if positive a is rated above negative b, 1/2 if equal, else 0."""
    difference = positive[:, None] - negative[None, :]
    return (difference > 0) + 0.5 * (difference == 0)


def jackknife_covariance(jack: np.ndarray) -> np.ndarray:
    """Cov of the flattened (treatment, reader) figures: (N-1)/N * sum of outer products of deviations."""
    n = jack.shape[0]
    flat = jack.reshape(n, -1)
    deviations = flat - flat.mean(axis=0)
    return (n - 1) / n * deviations.T @ deviations


def delong_covariance(study: Study) -> np.ndarray:
    """DeLong structural-component covariance of the flattened (treatment, reader) AUCs (factorial)."""
    v10, v01 = [], []
    for i in range(len(study.treatments)):
        for rc in study.by_reader:  # factorial: every reader's cases are the same, in the same order
            truth = study.truth[rc.cases].astype(bool)
            psi = placements(rc.ratings[i][truth], rc.ratings[i][~truth])
            v10.append(psi.mean(axis=1))
            v01.append(psi.mean(axis=0))
    v10, v01 = np.asarray(v10), np.asarray(v01)
    # Flattened index i * readers + j, the same as jackknife_covariance's reshape of [case, i, j].
    return np.cov(v10, ddof=1) / v10.shape[1] + np.cov(v01, ddof=1) / v01.shape[1]


def covariance(study: Study, jack: np.ndarray, method: str) -> np.ndarray:
    """The (treatments*readers)^2 covariance matrix; cross-reader entries are 0 in nested designs."""
    cov = jackknife_covariance(jack) if method == "jackknife" else delong_covariance(study)
    if study.design != FACTORIAL:
        n_treatments, n_readers = len(study.treatments), len(study.readers)
        reader = np.tile(np.arange(n_readers), n_treatments)
        cov = np.where(reader[:, None] == reader[None, :], cov, 0.0)
    return cov
