"""Retrieval and classification measures of the thesis's quantitative evaluation (section 4.1).

Pure NumPy: labels are class codes (strings), neighbours are given in rank order (rank 1
first). No Django here.

P@k of a class is the mean, over the queries of that class, of the share of the first k
neighbours that have the query's class. AP@k is the unweighted (macro) mean of P@k over the
classes that have at least one query, so a rare class counts as much as ``nv``.

The lesion-aware variant removes the neighbours that show the query's own lesion (same
``lesion_id``) *before* cutting at k: a second photograph of the same lesion is not evidence
that the retrieval generalises. Callers must therefore retrieve at least
``max(k) + (largest number of images of one lesion)`` neighbours per query, or
:func:`precision_at_k` raises ``ValueError``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TypedDict, Unpack

import numpy as np

from retrieval.classes import CODES

#: The cut-offs of the thesis's Table 4.I.
DEFAULT_KS: tuple[int, ...] = (1, 3, 6, 9)


@dataclass
class RetrievalScores:
    """P@k per class and AP@k for one retrieval method (fractions in [0, 1]).

    ``per_class`` holds only the classes that have queries (at that k); ``n_per_class``
    holds every class, with 0 for a class without queries. ``n_queries_at_k`` differs from
    ``n_queries`` only for scores combined from cut-offs with different eligible queries
    (see :func:`combine_scores`).
    """

    k: list[int]
    n_queries: int
    ap: dict[int, float]
    per_class: dict[str, dict[int, float]]
    n_per_class: dict[str, int]
    n_queries_at_k: dict[int, int] = field(default_factory=dict)
    lesion_aware: bool = False


@dataclass
class ClassificationScores:
    """Accuracy, per-class sensitivity (recall) and the confusion matrix of one classifier.

    ``confusion[i][j]`` counts the cases of true class ``classes[i]`` predicted as
    ``classes[j]``. ``sensitivity`` holds only the classes present in ``y_true``;
    ``macro_sensitivity`` is their unweighted mean.
    """

    classes: tuple[str, ...]
    n: int
    accuracy: float
    macro_sensitivity: float
    sensitivity: dict[str, float]
    confusion: np.ndarray


def validate_ks(ks: Sequence[int]) -> list[int]:
    """The cut-offs sorted, refusing an empty list, duplicates and values below 1."""
    values = list(ks)
    if not values:
        raise ValueError("at least one cut-off k is needed")
    if any(not isinstance(k, (int, np.integer)) or k < 1 for k in values):
        raise ValueError(f"cut-offs must be whole numbers >= 1, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate cut-offs in {values}")
    return sorted(int(k) for k in values)


def remove_same_lesion(
    query_lesions: Sequence[str],
    neighbour_labels: Sequence[Sequence[str]],
    neighbour_lesions: Sequence[Sequence[str]],
) -> list[list[str]]:
    """Each query's neighbour labels, in rank order, without the neighbours of its own lesion."""
    _check_same_length("query_lesions", query_lesions, "neighbour_labels", neighbour_labels)
    _check_same_length("neighbour_lesions", neighbour_lesions, "neighbour_labels", neighbour_labels)
    kept: list[list[str]] = []
    for index, (own, labels, lesions) in enumerate(zip(query_lesions, neighbour_labels, neighbour_lesions)):
        if len(labels) != len(lesions):
            raise ValueError(
                f"query {index}: {len(labels)} neighbour labels but {len(lesions)} neighbour lesion ids"
            )
        kept.append([label for label, lesion in zip(labels, lesions) if lesion != own])
    return kept


class SameLesionOptions(TypedDict, total=False):
    """The lesion-aware options of :func:`precision_at_k` and :func:`query_precision`."""

    query_lesions: Sequence[str] | None
    neighbour_lesions: Sequence[Sequence[str]] | None
    lesion_aware: bool


def precision_at_k(
    query_labels: Sequence[str],
    neighbour_labels: Sequence[Sequence[str]],
    ks: Sequence[int] = DEFAULT_KS,
    classes: Sequence[str] = CODES,
    **same_lesion: Unpack[SameLesionOptions],
) -> RetrievalScores:
    """P@k per class and AP@k (macro mean over classes with queries) for each cut-off in ``ks``.

    ``neighbour_labels[i]`` lists the classes of query i's neighbours, rank 1 first. With
    ``lesion_aware`` the neighbours whose lesion id equals the query's are removed before
    cutting at k, which needs ``query_lesions`` and ``neighbour_lesions``; retrieve at least
    k + (largest lesion size) neighbours for that. Raises ``ValueError`` naming the query
    index and k when a query has fewer than max(k) neighbours (after removal), and for
    labels outside ``classes``.
    """
    cutoffs = validate_ks(ks)
    hits = query_precision(query_labels, neighbour_labels, cutoffs, classes, **same_lesion)
    labels = np.asarray(query_labels)
    n_per_class = {code: int(np.count_nonzero(labels == code)) for code in classes}
    per_class = {
        code: {k: float(hits[labels == code, column].mean()) for column, k in enumerate(cutoffs)}
        for code in classes
        if n_per_class[code]
    }
    return RetrievalScores(
        k=cutoffs,
        n_queries=len(query_labels),
        ap=_macro_mean(per_class, cutoffs),
        per_class=per_class,
        n_per_class=n_per_class,
        n_queries_at_k={k: len(query_labels) for k in cutoffs},
        lesion_aware=same_lesion.get("lesion_aware", False),
    )


def query_precision(
    query_labels: Sequence[str],
    neighbour_labels: Sequence[Sequence[str]],
    ks: Sequence[int] = DEFAULT_KS,
    classes: Sequence[str] = CODES,
    *,
    query_lesions: Sequence[str] | None = None,
    neighbour_lesions: Sequence[Sequence[str]] | None = None,
    lesion_aware: bool = False,
) -> np.ndarray:
    """Per query (row) and cut-off (column, ``validate_ks(ks)`` order): the share of its first k
    neighbours with its class, the values :func:`precision_at_k` averages (same checks and
    lesion-aware removal). The bootstrap (:mod:`retrieval.ml.bootstrap`) resamples these rows."""
    cutoffs = validate_ks(ks)
    _check_same_length("query_labels", query_labels, "neighbour_labels", neighbour_labels)
    if not query_labels:
        raise ValueError("no queries to score")
    _check_known_labels(query_labels, classes)
    _check_known_labels([label for ranked in neighbour_labels for label in ranked], classes)
    if lesion_aware:
        if query_lesions is None or neighbour_lesions is None:
            raise ValueError("lesion-aware P@k needs query_lesions and neighbour_lesions")
        neighbour_labels = remove_same_lesion(query_lesions, neighbour_labels, neighbour_lesions)
    return _precision_matrix(query_labels, neighbour_labels, cutoffs, lesion_aware)


def combine_scores(parts: Sequence[RetrievalScores]) -> RetrievalScores:
    """Merge scores computed for disjoint cut-offs (each on its own eligible queries) into one.

    Used when queries with fewer than k neighbours are left out of P@k for that k only:
    ``n_queries`` and ``n_per_class`` are then those of the smallest k (the largest set).
    """
    if not parts:
        raise ValueError("nothing to combine")
    ordered = sorted(parts, key=lambda part: min(part.k))
    cutoffs = validate_ks([k for part in ordered for k in part.k])
    if len({part.lesion_aware for part in ordered}) != 1:
        raise ValueError("cannot combine lesion-aware and standard scores")
    per_class: dict[str, dict[int, float]] = {}
    for part in ordered:
        for code, values in part.per_class.items():
            per_class.setdefault(code, {}).update(values)
    first = ordered[0]
    return RetrievalScores(
        k=cutoffs,
        n_queries=first.n_queries,
        ap={k: value for part in ordered for k, value in part.ap.items()},
        per_class={code: per_class[code] for code in first.n_per_class if code in per_class},
        n_per_class=dict(first.n_per_class),
        n_queries_at_k={k: n for part in ordered for k, n in part.n_queries_at_k.items()},
        lesion_aware=first.lesion_aware,
    )


def classification_scores(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str] = CODES
) -> ClassificationScores:
    """Accuracy, macro sensitivity (mean recall over the classes present in ``y_true``),
    per-class sensitivity and the confusion matrix (rows truth, columns prediction)."""
    _check_same_length("y_true", y_true, "y_pred", y_pred)
    if not y_true:
        raise ValueError("no cases to score")
    _check_known_labels(y_true, classes)
    _check_known_labels(y_pred, classes)
    position = {code: index for index, code in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for truth, prediction in zip(y_true, y_pred):
        confusion[position[truth], position[prediction]] += 1
    cases_per_class = confusion.sum(axis=1)
    sensitivity = {
        code: float(confusion[index, index] / cases_per_class[index])
        for index, code in enumerate(classes)
        if cases_per_class[index]
    }
    return ClassificationScores(
        classes=tuple(classes),
        n=len(y_true),
        accuracy=float(np.trace(confusion) / len(y_true)),
        macro_sensitivity=float(np.mean(list(sensitivity.values()))),
        sensitivity=sensitivity,
        confusion=confusion,
    )


@dataclass(frozen=True)
class NeighbourVote:
    """The whole neighbour vote of one query, not a diagnosis (see :func:`neighbour_vote_tally`).

    ``order`` lists the classes present among the neighbours, the winner first; ``counts`` and
    ``shares`` (count / ``n``, summing to 1) hold exactly those classes; ``top`` is ``order[0]``.
    """

    top: str
    order: tuple[str, ...]
    counts: dict[str, int]
    shares: dict[str, float]
    n: int


def neighbour_vote_tally(neighbour_labels: Sequence[str], classes: Sequence[str] = CODES) -> NeighbourVote:
    """The neighbour vote, not a diagnosis: how many neighbours have each class, ranked by the thesis's rule.

    ``neighbour_labels`` is in rank order (rank 1 first). The class with the most neighbours
    wins. Ties in the count are broken as in the thesis, by weighting the ranks: among the tied
    classes the one with the larger sum of 1/rank comes first; if that is still tied (possible
    with many neighbours), the class whose best (smallest) rank is smaller. The same rule orders
    every class, not only the winner, so a list of shares shown in ``order`` always starts with
    ``top``. Ranks only break ties: a share is the count over the number of neighbours. Weights
    are exact fractions so that float rounding cannot decide.
    """
    if not neighbour_labels:
        raise ValueError("a vote needs at least one neighbour")
    _check_known_labels(neighbour_labels, classes)
    count: dict[str, int] = {}
    weight: dict[str, Fraction] = {}
    best_rank: dict[str, int] = {}
    for rank, label in enumerate(neighbour_labels, start=1):
        count[label] = count.get(label, 0) + 1
        weight[label] = weight.get(label, Fraction(0)) + Fraction(1, rank)
        best_rank.setdefault(label, rank)
    # Sorted on (count, weight, best rank): each later key only matters on a tie of the earlier.
    # Best ranks differ between classes, so the order is total and needs no further tie-break.
    order = tuple(sorted(count, key=lambda label: (-count[label], -weight[label], best_rank[label])))
    n = len(neighbour_labels)
    return NeighbourVote(
        top=order[0],
        order=order,
        counts={label: count[label] for label in order},
        shares={label: count[label] / n for label in order},
        n=n,
    )


def neighbour_vote(neighbour_labels: Sequence[str], classes: Sequence[str] = CODES) -> str:
    """The class that wins the neighbour vote (not a diagnosis): ``neighbour_vote_tally(...).top``."""
    return neighbour_vote_tally(neighbour_labels, classes).top


def _precision_matrix(
    query_labels: Sequence[str], neighbour_labels: Sequence[Sequence[str]], cutoffs: list[int], lesion_aware: bool
) -> np.ndarray:
    """Per query (row) and cut-off (column): share of the first k neighbours of the query's class."""
    deepest = cutoffs[-1]
    hits = np.empty((len(query_labels), len(cutoffs)), dtype=np.float64)
    for index, (label, ranked) in enumerate(zip(query_labels, neighbour_labels)):
        if len(ranked) < deepest:
            raise ValueError(_too_few_message(index, len(ranked), deepest, lesion_aware))
        matches = np.cumsum([neighbour == label for neighbour in ranked[:deepest]])
        hits[index] = [matches[k - 1] / k for k in cutoffs]
    return hits


def _too_few_message(index: int, found: int, k: int, lesion_aware: bool) -> str:
    if lesion_aware:
        return (
            f"query {index} has {found} neighbour(s) left after removing those of its own lesion; "
            f"P@{k} needs at least {k} (retrieve k + the largest number of images of one lesion)"
        )
    return f"query {index} has {found} neighbour(s); P@{k} needs at least {k}"


def _macro_mean(per_class: dict[str, dict[int, float]], cutoffs: list[int]) -> dict[int, float]:
    # Unweighted over classes: the thesis's AP@k, where df (1 %) weighs as much as nv (67 %).
    return {k: float(np.mean([values[k] for values in per_class.values()])) for k in cutoffs}


def _check_same_length(name: str, first: Sequence, other_name: str, other: Sequence) -> None:
    if len(first) != len(other):
        raise ValueError(f"{name} has {len(first)} entries but {other_name} has {len(other)}")


def _check_known_labels(labels: Sequence[str], classes: Sequence[str]) -> None:
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"unknown class(es) {', '.join(map(repr, unknown))}; expected one of {', '.join(classes)}")
