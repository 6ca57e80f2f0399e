"""The statistical building blocks on small cases with known answers."""
from __future__ import annotations

import math

import pytest

from readerstudy.analysis import statistics


def test_mean_std_uses_the_sample_standard_deviation():
    # 2, 4, 6: mean 4, squared deviations 4 + 0 + 4 over n - 1 = 2
    assert statistics.mean_std([2, 4, 6]) == {"mean": 4.0, "std": 2.0}
    assert statistics.mean_std([3]) == {"mean": 3.0, "std": None}
    assert statistics.mean_std([]) == {"mean": None, "std": None}


@pytest.mark.parametrize(("wrong_to_right", "right_to_wrong", "p"), [
    (0, 5, 0.0625),  # 2 * (1/2)^5
    (5, 0, 0.0625),
    (1, 4, 0.375),  # 2 * (1 + 5) / 32
    (3, 3, 1.0),
    (0, 0, 1.0),  # no discordant pairs
])
def test_mcnemar_exact(wrong_to_right, right_to_wrong, p):
    assert statistics.mcnemar_exact(wrong_to_right, right_to_wrong) == pytest.approx(p)


def test_cohen_kappa_on_a_known_table():
    # yes/yes 20, yes/no 5, no/yes 10, no/no 15: observed 35/50 = 0.7,
    # chance 0.5 * 0.6 + 0.5 * 0.4 = 0.5 -> kappa (0.7 - 0.5) / 0.5 = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert statistics.cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_is_undefined_when_chance_agreement_is_one():
    assert statistics.cohen_kappa(["nv", "nv"], ["nv", "nv"]) is None
    assert statistics.cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        statistics.cohen_kappa(["nv"], ["nv", "mel"])


def test_dcg_and_ndcg_by_hand():
    # 3/log2(2) + 2/log2(3) + 1/log2(4)
    assert statistics.dcg({1: 3, 2: 2, 3: 1}) == pytest.approx(3 + 2 / math.log2(3) + 0.5)
    assert statistics.ndcg({1: 3, 2: 2, 3: 1}, [3, 2, 1]) == pytest.approx(1.0)
    # reversed order: (1 + 2/log2(3) + 3/2) / (3 + 2/log2(3) + 1/2)
    assert statistics.ndcg({1: 1, 2: 2, 3: 3}, [1, 2, 3]) == \
        pytest.approx((1 + 2 / math.log2(3) + 1.5) / (3 + 2 / math.log2(3) + 0.5))
    assert statistics.ndcg({1: 0}, [0, 0]) == 0.0

