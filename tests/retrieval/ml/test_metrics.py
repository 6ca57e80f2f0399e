"""P@k / AP@k (standard and lesion-aware), classification scores and the neighbour vote, by hand."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.ml.metrics import classification_scores, neighbour_vote, precision_at_k

CLASSES = ("mel", "nv", "bkl")


def test_precision_at_k_per_class_and_macro_mean():
    queries = ["mel", "mel", "nv"]
    neighbours = [["mel", "nv", "mel"], ["nv", "nv", "mel"], ["nv", "nv", "nv"]]
    scores = precision_at_k(queries, neighbours, ks=(1, 3), classes=CLASSES)
    # mel: P@1 = (1 + 0) / 2 = 0.5 ; P@3 = (2/3 + 1/3) / 2 = 0.5
    # nv:  P@1 = 1 ; P@3 = 1 ; bkl has no query and is left out of the mean
    assert scores.per_class == {"mel": {1: 0.5, 3: 0.5}, "nv": {1: 1.0, 3: 1.0}}
    assert scores.ap == {1: 0.75, 3: 0.75}  # (0.5 + 1) / 2, not weighted by query counts
    assert scores.n_per_class == {"mel": 2, "nv": 1, "bkl": 0} and scores.n_queries == 3


def test_lesion_aware_removes_the_query_lesion_before_cutting():
    queries, query_lesions = ["mel"], ["L1"]
    neighbours = [["mel", "nv", "nv", "mel"]]
    lesions = [["L1", "L2", "L3", "L4"]]  # rank 1 is another photo of the query's own lesion
    plain = precision_at_k(queries, neighbours, ks=(1, 3), classes=CLASSES)
    aware = precision_at_k(queries, neighbours, ks=(1, 3), classes=CLASSES, query_lesions=query_lesions,
                           neighbour_lesions=lesions, lesion_aware=True)
    assert plain.ap == {1: 1.0, 3: pytest.approx(1 / 3)}  # mel, nv, nv
    assert aware.ap == {1: 0.0, 3: pytest.approx(1 / 3)}  # nv, nv, mel


def test_too_few_neighbours_is_an_error_naming_the_query():
    with pytest.raises(ValueError, match="query 1 has 2 neighbour"):
        precision_at_k(["mel", "nv"], [["mel", "nv", "nv"], ["nv", "nv"]], ks=(3,), classes=CLASSES)
    with pytest.raises(ValueError, match="left after removing those of its own lesion"):
        precision_at_k(["mel"], [["mel", "nv"]], ks=(2,), classes=CLASSES, query_lesions=["A"],
                       neighbour_lesions=[["A", "B"]], lesion_aware=True)


def test_classification_scores_by_hand():
    truth = ["mel", "mel", "nv", "nv", "nv", "bkl"]
    predicted = ["mel", "nv", "nv", "nv", "bkl", "bkl"]
    scores = classification_scores(truth, predicted, classes=CLASSES)
    assert scores.accuracy == pytest.approx(4 / 6)
    assert scores.sensitivity == {"mel": 0.5, "nv": pytest.approx(2 / 3), "bkl": 1.0}
    assert scores.macro_sensitivity == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert np.array_equal(scores.confusion, [[1, 1, 0], [0, 2, 1], [0, 0, 1]])


def test_neighbour_vote_majority_then_rank_weights():
    assert neighbour_vote(["nv", "mel", "mel", "nv", "mel", "bkl"], CLASSES) == "mel"  # 3 votes
    # 2 mel (ranks 2, 3: 1/2 + 1/3) vs 2 nv (ranks 1, 4: 1 + 1/4): nv wins the tie
    assert neighbour_vote(["nv", "mel", "mel", "nv"], CLASSES) == "nv"
    # 3 each: mel ranks 1,4,5 (1 + 1/4 + 1/5 = 1.45) vs nv ranks 2,3,6 (1/2 + 1/3 + 1/6 = 1.0)
    assert neighbour_vote(["mel", "nv", "nv", "mel", "mel", "nv"], CLASSES) == "mel"
    with pytest.raises(ValueError):
        neighbour_vote([], CLASSES)
