"""Lesion bootstrap and calibration on hand-made cases whose answers are known."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from retrieval.ml import bootstrap as bs
from retrieval.ml import calibration as cal


def test_a_class_whose_queries_all_hit_has_the_interval_1_1():
    lesions = ["L1", "L1", "L2", "L3", "L4", "L5"]
    labels = ["nv", "nv", "nv", "mel", "mel", "mel"]
    hits = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.5], [0.0, 0.5], [1.0, 0.0]])
    draw = bs.LesionBootstrap(lesions, labels, replicates=500, seed=3)
    per_class, (macro, macro_reps) = draw.class_means(hits, labels, ["mel", "nv"])
    estimate, replicates = per_class["nv"]
    assert estimate.tolist() == [1.0, 1.0]
    assert [i.as_list() for i in bs.interval(replicates)] == [[1.0, 1.0], [1.0, 1.0]]
    assert per_class["mel"][0] == pytest.approx([2 / 3, 1 / 3])
    assert macro == pytest.approx([(1 + 2 / 3) / 2, (1 + 1 / 3) / 2])
    low, high = bs.interval(macro_reps)[0].as_list()
    assert 0.5 <= low < macro[0] < high <= 1.0


def test_two_identical_methods_differ_by_exactly_0_with_p_1():
    rng = np.random.default_rng(0)
    lesions = [f"L{i // 2}" for i in range(40)]
    labels = ["nv" if i < 20 else "bcc" for i in range(40)]
    hits = rng.random((40, 3))
    draw = bs.LesionBootstrap(lesions, labels, replicates=300, seed=1)
    per_class, macro = draw.class_means(hits, labels, ["bcc", "nv"])
    for comparison in bs.compare(macro[0], macro[1], macro[0], macro[1]):
        assert (comparison.difference, comparison.low, comparison.high, comparison.p) == (0.0, 0.0, 0.0, 1.0)


def test_the_bootstrap_distribution_of_a_tiny_case_is_the_enumerated_one():
    """One class, two lesions: lesion A has two photos, both hits; lesion B one photo, a miss.

    Resampling two lesions with replacement gives AA (mean 1), BB (0) and AB/BA (2/3: all of
    A's photos count): probabilities 1/4, 1/4, 1/2. Resampling images instead would give other
    values (1/3 for instance), so the unit of resampling is visible.
    """
    lesions, labels, hits = ["A", "A", "B"], ["mel"] * 3, np.array([1.0, 1.0, 0.0])
    exact = {}
    for first, second in itertools.product([0, 1], repeat=2):
        counts = np.bincount([first, second], minlength=2)
        value = (counts[0] * 2) / (counts[0] * 2 + counts[1])
        exact[round(value, 12)] = exact.get(round(value, 12), 0) + 0.25
    assert exact == {1.0: 0.25, 0.0: 0.25, round(2 / 3, 12): 0.5}

    draw = bs.LesionBootstrap(lesions, labels, replicates=20000, seed=7)
    estimate, replicates = draw.mean(hits)
    assert estimate.tolist() == [2 / 3]
    found = {round(float(v), 12): n / len(replicates) for v, n in zip(*np.unique(replicates, return_counts=True))}
    assert set(found) == set(exact)
    for value, probability in exact.items():
        assert found[value] == pytest.approx(probability, abs=0.015)
    # the exact 2.5 % and 97.5 % quantiles of that distribution are 0 and 1
    assert bs.interval(replicates)[0].as_list() == [0.0, 1.0]


def test_each_replicate_keeps_every_class_s_number_of_lesions():
    lesions = ["a1", "a2", "a3", "b1", "b1", "b2"]
    labels = ["akiec", "akiec", "akiec", "df", "df", "df"]
    draw = bs.LesionBootstrap(lesions, labels, replicates=50, seed=0)
    assert draw.n_lesions == 5 and set(draw.strata) == {"akiec", "df"}
    for members, expected in ((draw.strata["akiec"], 3), (draw.strata["df"], 2)):
        assert np.all(draw.weights[:, members].sum(axis=1) == expected)


def test_the_draw_depends_on_the_seed_only():
    args = (["x", "y", "z", "w"], ["nv", "nv", "mel", "mel"])
    same = bs.LesionBootstrap(*args, replicates=30, seed=5).weights
    assert np.array_equal(same, bs.LesionBootstrap(*args, replicates=30, seed=5).weights)
    assert not np.array_equal(same, bs.LesionBootstrap(*args, replicates=30, seed=6).weights)


def test_a_method_better_on_every_lesion_gets_the_smallest_p():
    lesions = [f"L{i}" for i in range(12)]
    labels = ["nv"] * 6 + ["mel"] * 6
    better, worse = np.ones(12), np.zeros(12)
    draw = bs.LesionBootstrap(lesions, labels, replicates=99, seed=0)
    _, a = draw.class_means(better, labels, ["mel", "nv"])
    _, b = draw.class_means(worse, labels, ["mel", "nv"])
    (comparison,) = bs.compare(a[0], a[1], b[0], b[1])
    assert comparison.difference == 1.0 and comparison.low == comparison.high == 1.0
    assert comparison.p == pytest.approx(2 / 100)  # add-one corrected: never 0


def test_paired_p_counts_both_tails():
    assert bs.paired_p(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(min(1, 2 * (1 + 1) / 5))
    assert bs.paired_p(np.zeros(10)) == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no queries"):
        bs.LesionBootstrap([], [])
    with pytest.raises(ValueError, match="at least one bootstrap replicate"):
        bs.LesionBootstrap(["a"], ["nv"], replicates=0)
    with pytest.raises(ValueError, match="level"):
        bs.interval(np.zeros((3, 1)), level=1.5)


def test_vote_reliability_has_one_bin_per_share_and_the_hand_computed_ece():
    # six neighbours: shares 3/6 (right, wrong), 6/6 (right, right), 4/6 (wrong)
    shares = np.array([3, 3, 6, 6, 4]) / 6
    correct = np.array([1, 0, 1, 1, 0], dtype=bool)
    table, bins = cal.vote_reliability(shares, correct, 6)
    assert [b.n for b in table.bins] == [0, 0, 2, 1, 0, 2]
    assert table.bins[2].accuracy == 0.5 and table.bins[5].accuracy == 1.0 and table.bins[3].accuracy == 0.0
    expected = (2 * abs(0.5 - 0.5) + 1 * abs(0 - 4 / 6) + 2 * abs(1 - 1)) / 5
    assert table.ece == pytest.approx(expected)
    # the bootstrap's ECE estimate is the same number
    draw = bs.LesionBootstrap(list("abcde"), ["nv"] * 5, replicates=10)
    estimate, _ = draw.weighted_abs_sum(correct - shares, bins, 6)
    assert estimate == pytest.approx(expected)
    with pytest.raises(ValueError, match="multiples of 1/6"):
        cal.vote_reliability(np.array([0.3]), np.array([True]), 6)


def test_softmax_reliability_uses_ten_equal_bins():
    table, bins = cal.softmax_reliability(np.array([0.05, 0.95, 1.0, 0.55]), np.array([0, 1, 1, 0], dtype=bool))
    assert bins.tolist() == [0, 9, 9, 5] and len(table.bins) == 10
    assert table.ece == pytest.approx((abs(0 - 0.05) + 2 * abs(1 - 0.975) + abs(0 - 0.55)) / 4)
