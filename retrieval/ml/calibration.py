"""Calibration of confidences: reliability tables and the expected calibration error. Pure NumPy.

Top-label calibration (Guo et al., 2017): each query contributes one confidence, that of the
class it was given, and whether that class was right. The expected calibration error is
``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|`` over the bins b of the confidences.

* The neighbour vote's confidence is the share of the winning class, count / n
  (:func:`retrieval.ml.metrics.neighbour_vote_tally`). With n neighbours it takes only the values
  j / n, so each value is its own bin (:func:`share_bins`): nothing is averaged across bins.
* A classifier's softmax probability of its predicted class is continuous: ten bins of equal
  width (:func:`equal_width_bins`), the usual choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOFTMAX_BINS = 10


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    n: int
    confidence: float | None  # mean confidence of the bin's queries (None when empty)
    accuracy: float | None

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "n": self.n, "confidence": self.confidence,
                "accuracy": self.accuracy}


@dataclass(frozen=True)
class Reliability:
    scheme: str  # "shares of n" or "10 equal-width bins"
    bins: list[ReliabilityBin]
    ece: float
    n: int
    mean_confidence: float
    accuracy: float


def share_bins(confidence, n: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Bin of each vote share j / n (bin j - 1) and the bins' (low, high) = (j / n, j / n)."""
    if n < 1:
        raise ValueError("a vote needs at least one neighbour")
    confidence = np.asarray(confidence, dtype=np.float64)
    index = np.rint(confidence * n).astype(np.int64) - 1
    if np.any(index < 0) or np.any(index >= n) or not np.allclose((index + 1) / n, confidence):
        raise ValueError(f"vote shares must be multiples of 1/{n} in (0, 1]")
    return index, [(j / n, j / n) for j in range(1, n + 1)]


def equal_width_bins(confidence, n_bins: int = SOFTMAX_BINS) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Bin of each confidence in [0, 1] among ``n_bins`` equal bins (1.0 in the last)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if np.any(confidence < 0) or np.any(confidence > 1):
        raise ValueError("confidences must be in [0, 1]")
    index = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    return index, [(b / n_bins, (b + 1) / n_bins) for b in range(n_bins)]


def reliability(confidence, correct, bins: np.ndarray, edges: list[tuple[float, float]], scheme: str) -> Reliability:
    """The reliability table and ECE of ``confidence`` (n,) against ``correct`` (n,) bool."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1 or not len(confidence):
        raise ValueError("one confidence and one outcome per query, at least one query")
    table, gap = [], 0.0
    for b, (low, high) in enumerate(edges):
        members = bins == b
        count = int(members.sum())
        if count:
            mean_conf, acc = float(confidence[members].mean()), float(correct[members].mean())
            gap += count * abs(acc - mean_conf)
            table.append(ReliabilityBin(low, high, count, mean_conf, acc))
        else:
            table.append(ReliabilityBin(low, high, 0, None, None))
    return Reliability(scheme, table, gap / len(confidence), len(confidence), float(confidence.mean()),
                       float(correct.mean()))


def vote_reliability(shares, correct, n: int) -> tuple[Reliability, np.ndarray]:
    """Reliability of the neighbour vote's top share; also the bin of each query (for the bootstrap)."""
    bins, edges = share_bins(shares, n)
    return reliability(shares, correct, bins, edges, f"top share j/{n}, one bin per value"), bins


def softmax_reliability(probabilities, correct, n_bins: int = SOFTMAX_BINS) -> tuple[Reliability, np.ndarray]:
    """Reliability of a classifier's top softmax probability (equal-width bins)."""
    bins, edges = equal_width_bins(probabilities, n_bins)
    return reliability(probabilities, correct, bins, edges, f"top softmax probability, {n_bins} equal bins"), bins
