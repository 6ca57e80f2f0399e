"""P@k / AP@k (standard and lesion-aware), classification scores and the neighbour vote,
each against a small example computed by hand. Pure NumPy, no database."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.classes import CODES
from retrieval.ml.metrics import (
    DEFAULT_KS,
    NeighbourVote,
    RetrievalScores,
    classification_scores,
    combine_scores,
    neighbour_vote,
    neighbour_vote_tally,
    precision_at_k,
    remove_same_lesion,
    validate_ks,
)

MEL, NV, BCC = "mel", "nv", "bcc"

# Three queries, nine neighbours each (rank 1 first).
QUERIES = [MEL, MEL, NV]
NEIGHBOURS = [
    [MEL, NV, MEL, NV, NV, NV, MEL, NV, NV],  # P@1 1/1, P@3 2/3, P@6 2/6, P@9 3/9
    [NV, MEL, MEL, MEL, MEL, MEL, MEL, NV, NV],  # P@1 0/1, P@3 2/3, P@6 5/6, P@9 6/9
    [NV] * 9,  # P@k = 1 for every k
]


def test_precision_at_k_per_class_and_macro_mean():
    scores = precision_at_k(QUERIES, NEIGHBOURS)

    assert scores.k == list(DEFAULT_KS) == [1, 3, 6, 9]
    assert scores.n_queries == 3
    # mel: P@1 (1 + 0)/2, P@3 (2/3 + 2/3)/2, P@6 (1/3 + 5/6)/2 = 7/12, P@9 (1/3 + 2/3)/2
    assert scores.per_class[MEL] == pytest.approx({1: 0.5, 3: 2 / 3, 6: 7 / 12, 9: 0.5})
    assert scores.per_class[NV] == pytest.approx({1: 1.0, 3: 1.0, 6: 1.0, 9: 1.0})
    # AP@k = (P@k mel + P@k nv) / 2: (0.5+1)/2, (2/3+1)/2, (7/12+1)/2, (0.5+1)/2.
    # A mean over queries instead would give (1+0+1)/3 = 2/3 at k=1: the macro mean differs.
    assert scores.ap == pytest.approx({1: 0.75, 3: 5 / 6, 6: 19 / 24, 9: 0.75})


def test_classes_without_queries_are_absent_and_left_out_of_the_macro_mean():
    scores = precision_at_k(QUERIES, NEIGHBOURS, ks=(1,))

    assert set(scores.per_class) == {MEL, NV}
    assert scores.n_per_class == {"akiec": 0, "bcc": 0, "bkl": 0, "df": 0, "mel": 2, "nv": 1, "vasc": 0}
    # Counting the five empty classes as 0 would give (0.5 + 1) / 7, not (0.5 + 1) / 2.
    assert scores.ap[1] == pytest.approx(0.75)


def test_lesion_aware_removes_the_query_lesion_before_cutting_at_k():
    labels = [[MEL, NV, MEL, NV]]
    lesions = [["L1", "L9", "L2", "L8"]]  # rank 1 is another image of the query's own lesion L1

    standard = precision_at_k([MEL], labels, ks=(1, 3))
    aware = precision_at_k([MEL], labels, ks=(1, 3), query_lesions=["L1"], neighbour_lesions=lesions,
                           lesion_aware=True)

    # standard: [mel] -> 1/1; [mel, nv, mel] -> 2/3
    assert standard.ap == pytest.approx({1: 1.0, 3: 2 / 3})
    # lesion-aware: [nv, mel, nv] is what is left -> P@1 0/1, P@3 1/3
    assert aware.ap == pytest.approx({1: 0.0, 3: 1 / 3})
    assert aware.lesion_aware and not standard.lesion_aware


def test_remove_same_lesion_keeps_rank_order():
    kept = remove_same_lesion(["L1", "L2"], [[MEL, NV, BCC], [NV, NV]], [["L3", "L1", "L4"], ["L2", "L5"]])

    assert kept == [[MEL, BCC], [NV]]


def test_too_few_neighbours_names_the_query_and_k():
    with pytest.raises(ValueError, match=r"^query 1 has 2 neighbour\(s\); P@3 needs at least 3$"):
        precision_at_k([MEL, NV], [[MEL, MEL, MEL], [NV, NV]], ks=(1, 3))


def test_too_few_neighbours_after_lesion_removal_says_so():
    # Three neighbours are enough for P@3 in the standard variant, not once L1 is removed.
    args = ([MEL], [[MEL, NV, MEL]], (3,))
    assert precision_at_k(*args).ap == pytest.approx({3: 2 / 3})
    with pytest.raises(ValueError, match=r"query 0 has 2 neighbour\(s\) left after removing those of its own lesion; P@3"):
        precision_at_k(*args, query_lesions=["L1"], neighbour_lesions=[["L1", "L2", "L3"]], lesion_aware=True)


def test_lesion_aware_needs_lesion_ids():
    with pytest.raises(ValueError, match="needs query_lesions and neighbour_lesions"):
        precision_at_k([MEL], [[MEL]], ks=(1,), lesion_aware=True)


@pytest.mark.parametrize(
    ("queries", "neighbours", "message"),
    [
        (["melanoma"], [[MEL]], "unknown class"),
        ([MEL], [["naevus"]], "unknown class"),
        ([MEL, NV], [[MEL]], "query_labels has 2 entries but neighbour_labels has 1"),
        ([], [], "no queries"),
    ],
)
def test_bad_inputs_are_refused(queries, neighbours, message):
    with pytest.raises(ValueError, match=message):
        precision_at_k(queries, neighbours, ks=(1,))


@pytest.mark.parametrize("ks", [(), (0, 3), (3, 3), (1.5,)])
def test_bad_cutoffs_are_refused(ks):
    with pytest.raises(ValueError):
        validate_ks(ks)


def test_validate_ks_sorts():
    assert validate_ks((9, 1, 3)) == [1, 3, 9]


def test_combine_scores_merges_cutoffs_scored_on_different_queries():
    at_1 = precision_at_k([MEL, NV], [[MEL], [MEL]], ks=(1,))  # mel 1, nv 0 -> AP@1 0.5
    at_2 = precision_at_k([MEL], [[MEL, NV]], ks=(2,))  # only the mel query has 2 -> mel 1/2, AP@2 0.5

    combined = combine_scores([at_2, at_1])

    assert combined.k == [1, 2]
    assert combined.n_queries == 2 and combined.n_queries_at_k == {1: 2, 2: 1}
    assert combined.per_class == {MEL: {1: 1.0, 2: 0.5}, NV: {1: 0.0}}
    assert combined.ap == {1: 0.5, 2: 0.5}


def test_classification_scores_on_a_hand_example():
    y_true = [MEL, MEL, MEL, NV, NV, BCC]
    y_pred = [MEL, NV, MEL, NV, NV, MEL]

    scores = classification_scores(y_true, y_pred)

    assert scores.n == 6
    assert scores.accuracy == pytest.approx(4 / 6)  # 2 mel + 2 nv right
    # recall: mel 2/3, nv 2/2, bcc 0/1; classes absent from y_true (akiec, bkl, df, vasc) are left out
    assert scores.sensitivity == pytest.approx({BCC: 0.0, MEL: 2 / 3, NV: 1.0})
    assert scores.macro_sensitivity == pytest.approx((2 / 3 + 1 + 0) / 3)
    expected = np.zeros((len(CODES), len(CODES)), dtype=int)
    position = {code: i for i, code in enumerate(CODES)}
    expected[position[MEL], position[MEL]] = 2
    expected[position[MEL], position[NV]] = 1
    expected[position[NV], position[NV]] = 2
    expected[position[BCC], position[MEL]] = 1  # rows truth, columns prediction
    assert scores.confusion.tolist() == expected.tolist()


def test_classification_scores_refuse_unknown_labels():
    with pytest.raises(ValueError, match="unknown class"):
        classification_scores([MEL], ["melanoma"])


def test_neighbour_vote_majority():
    assert neighbour_vote([MEL, NV, NV, BCC, NV, MEL]) == NV  # nv 3, mel 2, bcc 1


def test_neighbour_vote_tie_broken_by_rank_weights():
    # mel 2, nv 2, bcc 2: weights mel 1/1 + 1/4 = 1.25, nv 1/2 + 1/3 = 0.83, bcc 1/5 + 1/6 = 0.37
    assert neighbour_vote([MEL, NV, NV, MEL, BCC, BCC]) == MEL
    # nv 1/1 + 1/6 = 1.17, mel 1/2 + 1/3 = 0.83, bcc 1/4 + 1/5 = 0.45: the counts tie, the weights do not
    assert neighbour_vote([NV, MEL, MEL, BCC, BCC, NV]) == NV


def test_neighbour_vote_equal_weights_go_to_the_better_best_rank():
    # 1/5 + 1/20 == 1/6 + 1/12 == 1/4 exactly; 16 one-off filler classes keep the counts at 2 vs 2.
    fillers = [f"c{i}" for i in range(16)]
    classes = (MEL, BCC, *fillers)
    ranks = {5: MEL, 20: MEL, 6: BCC, 12: BCC}
    spare = iter(fillers)
    labels = [ranks.get(rank) or next(spare) for rank in range(1, 21)]

    assert neighbour_vote(labels, classes=classes) == MEL  # best rank 5 beats 6
    swapped = [{MEL: BCC, BCC: MEL}.get(label, label) for label in labels]
    assert neighbour_vote(swapped, classes=classes) == BCC


def test_neighbour_vote_needs_neighbours():
    with pytest.raises(ValueError, match="at least one neighbour"):
        neighbour_vote([])
    with pytest.raises(ValueError, match="at least one neighbour"):
        neighbour_vote_tally([])


def test_neighbour_vote_refuses_unknown_labels():
    with pytest.raises(ValueError, match="unknown class"):
        neighbour_vote_tally([MEL, "melanoma"])


#: Issue 15's example: the search list said nv (count) while the result page listed mel first (1/rank weights).
ISSUE_15 = ["mel", "nv", "nv", "bkl", "bkl", "akiec"]


def test_the_vote_of_issue_15_is_count_based_with_rank_breaking_ties():
    tally = neighbour_vote_tally(ISSUE_15)

    # nv and bkl 2 each, nv first on 1/rank (1/2 + 1/3 > 1/4 + 1/5); mel and akiec 1 each, mel on rank (1 < 6).
    assert tally == NeighbourVote(
        top="nv",
        order=("nv", "bkl", "mel", "akiec"),
        counts={"nv": 2, "bkl": 2, "mel": 1, "akiec": 1},
        shares={"nv": 2 / 6, "bkl": 2 / 6, "mel": 1 / 6, "akiec": 1 / 6},
        n=6,
    )
    assert list(tally.counts) == list(tally.shares) == list(tally.order)
    assert neighbour_vote(ISSUE_15) == "nv"


def test_every_class_is_ordered_by_the_rule_not_only_the_winner():
    # mel 2 (1/1 + 1/4), nv 2 (1/2 + 1/3), bcc 2 (1/5 + 1/6): one count, three weights.
    assert neighbour_vote_tally([MEL, NV, NV, MEL, BCC, BCC]).order == (MEL, NV, BCC)
    # Three singletons after the majority: their ranks order them.
    assert neighbour_vote_tally([BCC, NV, MEL, NV, NV, "df"]).order == (NV, BCC, MEL, "df")


def _rule_key(labels: list[str], code: str) -> tuple[int, Fraction, int]:
    """The thesis's rule, written out for the test oracle: (count, sum of 1/rank, -best rank)."""
    ranks = [rank for rank, label in enumerate(labels, start=1) if label == code]
    return len(ranks), sum((Fraction(1, rank) for rank in ranks), Fraction(0)), -ranks[0]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(CODES), min_size=1, max_size=20))
def test_the_tally_agrees_with_itself_for_any_neighbours(labels):
    tally = neighbour_vote_tally(labels)

    assert tally.top == neighbour_vote(labels) == tally.order[0]
    assert set(tally.order) == set(labels) and len(tally.order) == len(set(labels))
    assert tally.n == len(labels) and sum(tally.counts.values()) == len(labels)
    assert sum(tally.shares.values()) == pytest.approx(1.0)
    assert all(tally.shares[code] == tally.counts[code] / len(labels) for code in tally.order)
    assert all(tally.counts[code] == labels.count(code) for code in tally.order)
    # Shown in this order, the shares never increase, and each step down is decided by the rule.
    keys = [_rule_key(labels, code) for code in tally.order]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
    assert [tally.shares[code] for code in tally.order] == sorted(tally.shares.values(), reverse=True)


def test_retrieval_scores_fields():
    scores = precision_at_k([NV], [[NV, MEL]], ks=(2,))

    assert scores == RetrievalScores(
        k=[2], n_queries=1, ap={2: 0.5}, per_class={NV: {2: 0.5}},
        n_per_class={code: int(code == NV) for code in CODES}, n_queries_at_k={2: 1}, lesion_aware=False,
    )
