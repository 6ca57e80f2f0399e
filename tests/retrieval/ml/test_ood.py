"""Out-of-distribution scores and metrics (retrieval.ml.ood) on fixed sets with known answers."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from retrieval.ml import ood


# --- AUROC by the Mann-Whitney statistic ------------------------------------------------------

def test_auroc_counts_the_pairs_an_in_distribution_image_wins():
    # in-distribution 3, 5, 7 against out-of-distribution 1, 4: pairs won 1+2+2 = 5 of 6
    assert ood.auroc([3, 5, 7], [1, 4]) == pytest.approx(5 / 6)
    assert ood.auroc([3, 5, 7], [0, 1]) == 1.0
    assert ood.auroc([0, 1], [3, 5, 7]) == 0.0


def test_auroc_counts_ties_one_half():
    # pairs: (2,1) win, (2,2) tie, (2,3) loss, (3,1) win, (3,2) win, (3,3) tie -> (3 + 2 * 0.5) / 6
    assert ood.auroc([2, 3], [1, 2, 3]) == pytest.approx(4 / 6)
    assert ood.auroc([1, 1, 1], [1, 1]) == 0.5  # all tied: no separation
    # ties inside one side do not matter
    assert ood.auroc([5, 5, 5], [1, 1]) == 1.0


def test_auroc_equals_the_pairwise_definition_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 40), rng.integers(0, 6, 25)
    pairwise = np.mean((a[:, None] > b[None]) + 0.5 * (a[:, None] == b[None]))
    assert ood.auroc(a, b) == pytest.approx(pairwise)


def test_auroc_of_an_empty_side_is_none_and_non_finite_scores_are_refused():
    assert ood.auroc([], [1.0]) is None and ood.auroc([1.0], []) is None
    with pytest.raises(ValueError, match="finite"):
        ood.auroc([np.nan, 1.0], [0.0])


# --- Warned shares and the threshold ---------------------------------------------------------

def test_a_score_is_warned_only_strictly_below_the_threshold():
    assert ood.warned_share([0.1, 0.2, 0.3, 0.4], 0.3) == 0.5  # 0.3 itself is not warned
    assert ood.warned_share([], 0.3) is None


@pytest.mark.parametrize(("n", "k"), [(19, 1), (39, 2), (99, 5), (152, 7), (10, 1)])
def test_the_conformal_threshold_is_the_kth_smallest_score(n, k):
    scores = np.arange(n, dtype=float)[::-1]  # n-1, ..., 0: the k-th smallest is k - 1
    threshold, bound = ood.conformal_threshold(scores, 0.05)
    assert threshold == k - 1 and bound == pytest.approx(k / (n + 1))
    assert ood.warned_share(scores, threshold) == pytest.approx((k - 1) / n)  # those strictly below
    if n >= 19:
        assert bound <= 0.05


def test_the_conformal_threshold_keeps_the_false_warning_rate_on_new_in_distribution_scores():
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(400):
        calibration, new = rng.normal(size=99), rng.normal(size=200)
        threshold, bound = ood.conformal_threshold(calibration, 0.05)
        rates.append(ood.warned_share(new, threshold))
    assert bound == pytest.approx(0.05)
    assert np.mean(rates) == pytest.approx(0.05, abs=0.006)  # k / (n + 1) = 5 / 100 on average


def test_the_conformal_threshold_needs_scores_and_a_rate():
    with pytest.raises(ValueError):
        ood.conformal_threshold([], 0.05)
    with pytest.raises(ValueError):
        ood.conformal_threshold([1.0], 1.5)


# --- Scores -----------------------------------------------------------------------------------

def test_the_similarity_scores():
    similarities = np.array([[0.9, 0.8, 0.4], [0.5, 0.5, 0.2]])
    assert ood.best_cosine(similarities).tolist() == [0.9, 0.5]
    assert ood.knn_cosine(similarities, 2) == pytest.approx([0.85, 0.5])
    assert ood.knn_cosine(similarities, 10) == pytest.approx([0.7, 0.4])  # fewer than k: all of them
    with pytest.raises(ValueError):
        ood.knn_cosine(similarities, 0)


def test_the_classifier_scores():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0], [1000.0, 0.0]])
    assert ood.max_softmax(logits) == pytest.approx([0.5, 0.75, 1.0])
    assert ood.energy(logits) == pytest.approx([np.log(2), np.log(4), 1000.0])  # no overflow
    assert ood.energy(logits[:2], temperature=2.0) == pytest.approx(2 * np.log(np.exp(logits[:2, 0] / 2) + 1))


def test_ledoit_wolf_shrinkage_matches_scikit_learns_formula_on_a_fixed_set():
    # Ledoit & Wolf (2004), as sklearn.covariance.ledoit_wolf_shrinkage computes it (assume_centered):
    # beta = mean over rows of ||x x^T - S||^2 / (n d), delta = ||S - mu I||^2 / d, shrinkage = min(beta, delta) / delta
    x = np.array([[1.0, 2.0, 0.5], [-1.0, 0.0, 1.5], [0.5, -1.5, -1.0], [-0.5, -0.5, -1.0]])
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2) / d
    beta = sum(np.sum((np.outer(row, row) - s) ** 2) for row in x) / n ** 2 / d
    assert ood.ledoit_wolf_shrinkage(x) == pytest.approx(min(beta, delta) / delta)
    assert 0 <= ood.ledoit_wolf_shrinkage(x) <= 1


def test_the_mahalanobis_score_on_two_known_classes():
    # class 0 around (0, 0), class 1 around (10, 0), spread 1 on each axis
    unit = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=float)
    features = np.concatenate([unit, unit + [10, 0]])
    labels = np.array([0] * 4 + [1] * 4)
    model = ood.MahalanobisModel.fit(features, labels)
    assert model.means.tolist() == [[0, 0], [10, 0]] and model.n == 8
    # pooled covariance diag(0.5, 0.5) is already a scaled identity: any shrinkage leaves it
    assert model.precision == pytest.approx(np.eye(2) * 2, abs=1e-6)
    assert model.score(np.array([[0.0, 0.0], [10.0, 1.0], [5.0, 0.0]])) == pytest.approx([0.0, -2.0, -50.0])
    again = ood.MahalanobisModel.from_arrays(model.to_arrays())
    assert again.score(np.array([[1.0, 1.0]])) == pytest.approx(model.score(np.array([[1.0, 1.0]])))


def test_the_mahalanobis_model_is_invertible_with_more_dimensions_than_vectors():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(20, 64))
    model = ood.MahalanobisModel.fit(features, rng.integers(0, 3, 20))
    assert 0 < model.shrinkage <= 1 and np.all(np.isfinite(model.precision))
    near, far = model.score(features[:5]), model.score(features[:5] * 10)
    assert np.all(near > far)


def test_candidate_scores_computes_what_is_asked_and_the_combination():
    similarities = np.array([[0.9, 0.7], [0.3, 0.1]])
    logits = np.array([[3.0, 0.0], [0.0, 0.0]])
    features = np.array([[0.0, 0.0], [4.0, 0.0]])
    model = ood.MahalanobisModel(np.zeros((1, 2), np.float32), np.eye(2, dtype=np.float32), 0.0, 10)
    scores = ood.candidate_scores(similarities=similarities, logits=logits, features=features, mahalanobis=model,
                                  k=2, names=[n for n in ood.CANDIDATES if n != ood.COMBINED])
    assert scores[ood.KNN_COSINE] == pytest.approx([0.8, 0.2]) and scores[ood.MAHALANOBIS] == pytest.approx([0, -16])
    params = ood.fit_combination(scores)
    assert params["parts"] == list(ood.COMBINED_PARTS)
    both = ood.candidate_scores(similarities=similarities, logits=logits, features=features, mahalanobis=model, k=2,
                                combination=params, names=[ood.COMBINED])
    assert list(both) == [ood.COMBINED] and both[ood.COMBINED] == pytest.approx([1.0, -1.0])  # z-scores +-1
    with pytest.raises(ValueError, match="Mahalanobis"):
        ood.candidate_scores(similarities=similarities, names=[ood.MAHALANOBIS])


# --- Evaluation and the honest selection -------------------------------------------------------

def test_evaluate_reports_shares_overall_per_kind_and_per_source():
    figures = ood.evaluate(np.array([0.9, 0.8, 0.5, 0.7]), np.array([0.1, 0.6, 0.95, 0.2]),
                           ["photo", "photo", "skin", "skin"], threshold=0.65, in_sources=["val", "val", "lib", "lib"])
    assert figures["ood_warned"] == 0.75 and figures["id_warned"] == 0.25
    assert figures["ood_warned_per_kind"] == {"photo": 1.0, "skin": 0.5} and figures["ood_warned_macro"] == 0.75
    assert figures["id_warned_per_source"] == {"lib": 0.5, "val": 0.0}
    # in > out pairs: 0.9: 3 (0.1, 0.6, 0.2), 0.8: 3, 0.5: 2, 0.7: 3 -> 11 of 16
    assert figures["auroc"] == pytest.approx(11 / 16)


def test_the_halves_keep_groups_together_are_balanced_per_stratum_and_stable():
    groups = [f"lesion{i // 2}" for i in range(40)]  # 20 lesions of 2 photos
    strata = ["val"] * 20 + ["lib"] * 20
    select = ood.select_half(groups, strata)
    for lesion in set(groups):
        assert len({bool(s) for s, g in zip(select, groups) if g == lesion}) == 1
    assert select[:20].sum() == 10 and select[20:].sum() == 10  # 5 of 10 lesions each side, per stratum
    assert ood.select_half(list(reversed(groups)), list(reversed(strata))).tolist() == select[::-1].tolist()


def test_select_score_chooses_on_the_select_half_and_reports_the_other():
    # Candidate "a" separates perfectly on the select half, "b" only on the report half: the choice
    # must be "a" (the report half must not steer it), and "a"'s figures come from the report half.
    in_select = np.array([True] * 20 + [False] * 20)
    out_select = np.array([True, True, False, False])
    kinds = ["photo", "skin", "photo", "skin"]
    in_a = np.concatenate([np.linspace(1, 2, 20), np.linspace(1, 2, 20)])
    out_a = np.array([0.0, 0.5, 1.5, 3.0])  # report half: one below, one above everything
    in_b = in_a.copy()
    out_b = np.array([1.9, 3.0, 0.0, 0.1])
    selection = ood.select_score({"x_a": in_a, "x_b": in_b}, {"x_a": out_a, "x_b": out_b}, in_select=in_select,
                                 out_select=out_select, out_kinds=kinds, order=["x_a", "x_b"])
    assert selection.method == "x_a"
    assert selection.threshold == 1.0 and selection.bound == pytest.approx(1 / 21)  # k = floor(0.05 * 21) = 1
    assert selection.candidates["x_a"]["select"]["ood_warned"] == 1.0
    report = selection.report
    assert report["ood_warned_per_kind"] == {"photo": 0.0, "skin": 0.0}  # 1.5 and 3.0 are not below 1.0
    assert report["id_warned"] == 0.0 and report["n_in"] == 20 and report["n_out"] == 2
    assert selection.candidates["x_b"]["report"]["ood_warned"] == 1.0  # better on the report half, not chosen


def test_select_score_breaks_ties_by_auroc_then_by_order():
    in_select, out_select, kinds = np.ones(40, dtype=bool), np.ones(2, dtype=bool), ["photo", "photo"]
    out = np.array([0.5, 0.6])
    clean = np.linspace(1, 2, 40)  # threshold = 2nd smallest (k = floor(0.05 * 41) = 2); AUROC 1
    one_low = np.concatenate([[0.2], np.linspace(1, 2, 39)])  # threshold 1.0; AUROC (39 * 2) / 80 = 0.975
    chosen = ood.select_score({"q": one_low, "p": clean}, {"q": out, "p": out}, in_select=in_select,
                              out_select=out_select, out_kinds=kinds, order=["q", "p"])
    assert chosen.candidates["q"]["select"]["ood_warned_macro"] == chosen.candidates["p"]["select"]["ood_warned_macro"] == 1
    assert chosen.candidates["q"]["select"]["auroc"] == pytest.approx(0.975)
    assert chosen.method == "p"  # equal warned shares: the higher AUROC
    same = ood.select_score({"q": clean, "p": clean}, {"q": out, "p": out}, in_select=in_select,
                            out_select=out_select, out_kinds=kinds, order=["q", "p"])
    assert same.method == "q"  # equal evidence: the earlier (simpler) candidate


def test_the_module_imports_no_django():
    code = "import sys, retrieval.ml.ood, retrieval.ml.ood_set; print(any(m.split('.')[0] == 'django' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
