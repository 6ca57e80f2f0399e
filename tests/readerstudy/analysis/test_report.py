"""build_report against figures worked out by hand for the scenario (see scenario.py)."""
from __future__ import annotations

import json
import math

import pytest
from scipy import stats as scipy_stats

from readerstudy.analysis.reads import Read, RelevanceRating
from readerstudy.analysis.report import build_report
from retrieval.classes import CODES
from tests.readerstudy.analysis.scenario import study_ratings, study_reads

approx = pytest.approx


@pytest.fixture(scope="module")
def report():
    return build_report(study_reads(), ratings=study_ratings())


def reader_row(report, name):
    return next(row for row in report["readers"] if row["reader"] == name)


def test_counts(report):
    assert (report["n_reads"], report["n_readers"], report["n_cases"]) == (16, 3, 5)
    assert [row["reader"] for row in report["readers"]] == ["alice", "bob", "carol"]
    assert [row["n_cases"] for row in report["readers"]] == [4, 3, 2]


def test_per_reader_accuracy_and_confidence(report):
    alice, bob, carol = (reader_row(report, name) for name in ("alice", "bob", "carol"))
    # Alice: Task 1 right on c2, c3 (conf 4, 3), wrong on c1, c4 (conf 2, 3).
    assert alice["task1"] == {"accuracy": 0.5, "confidence": 3.0, "confidence_correct": 3.5,
                              "confidence_wrong": 2.5, "n": 4}
    # Task 2 right on c1, c2, c4 (conf 4, 5, 4), wrong on c3 (conf 3).
    assert alice["task2"] == {"accuracy": 0.75, "confidence": 4.0, "confidence_correct": approx(13 / 3),
                              "confidence_wrong": 3.0, "n": 4}
    assert bob["task1"] == {"accuracy": approx(1 / 3), "confidence": approx(8 / 3), "confidence_correct": 5.0,
                            "confidence_wrong": 1.5, "n": 3}
    assert bob["task2"] == {"accuracy": 1.0, "confidence": 4.0, "confidence_correct": 4.0,
                            "confidence_wrong": None, "n": 3}
    assert carol["task1"]["accuracy"] == 0.5
    assert carol["task2"] == {"accuracy": None, "confidence": None, "confidence_correct": None,
                              "confidence_wrong": None, "n": 0}


def test_majority_vote_accuracy_per_reader(report):
    # The vote is right on c1, c2, c5 and wrong on c3, c4.
    assert [row["majority_vote_accuracy"] for row in report["readers"]] == [0.5, 1.0, 0.0]


def test_summary_is_mean_and_sample_std_over_readers(report):
    summary = report["summary"]
    # 0.5, 1.0, 0.0: deviations 0, +0.5, -0.5 -> variance 0.5 / 2
    assert summary["majority_vote_accuracy"] == {"mean": 0.5, "std": approx(0.5)}
    # 1/2, 1/3, 1/2: mean 4/9; deviations 1/18, -2/18, 1/18 -> variance (6/324) / 2 = 1/108
    assert summary["task1"]["accuracy"] == {"mean": approx(4 / 9), "std": approx(math.sqrt(1 / 108))}
    # Carol has no Task 2: 0.75 and 1.0 -> mean 0.875, std 0.125 * sqrt(2)
    assert summary["task2"]["accuracy"] == {"mean": approx(0.875), "std": approx(0.125 * math.sqrt(2))}


def test_summary_confidences_are_pooled_over_reads(report):
    task1, task2 = report["summary"]["task1"], report["summary"]["task2"]
    # Task 1: 2+4+3+3 + 5+2+1 + 4+2 = 26 over 9 reads; right 4,3,5,4; wrong 2,3,2,1,2
    assert (task1["confidence"], task1["confidence_correct"], task1["confidence_wrong"]) == \
        (approx(26 / 9), 4.0, 2.0)
    # Not the mean of the readers' means over right answers (3.5, 5.0, 4.0)
    assert task1["confidence_correct"] != approx((3.5 + 5.0 + 4.0) / 3)
    # Task 2: 4+5+3+4 + 5+4+3 = 28 over 7; right 4,5,4,5,4,3 = 25 over 6; wrong 3
    assert (task2["confidence"], task2["confidence_correct"], task2["confidence_wrong"]) == \
        (4.0, approx(25 / 6), 3.0)


def test_changes_and_agreement_with_the_majority_vote(report):
    assert report["changes"] == {
        "n_pairs": 7,
        "wrong_to_right": 4,  # alice c1, c4; bob c2, c5
        "right_to_wrong": 1,  # alice c3
        "wrong_to_right_agreeing_with_majority_vote": 3,  # not alice c4 (vote nv, answer mel)
        "right_to_wrong_agreeing_with_majority_vote": 1,  # alice answered the vote's bkl
        "wrong_to_right_majority_vote_agreed_with_task1": 1,  # alice c4: the vote nv was her Task 1 answer
        "right_to_wrong_majority_vote_agreed_with_task1": 0,  # alice c3: vote bkl, Task 1 bcc (the thesis's count)
    }


def test_confusion_matrices(report):
    index = {code: i for i, code in enumerate(CODES)}
    assert report["confusion"]["classes"] == list(CODES)

    def expected(cells):
        matrix = [[0] * len(CODES) for _ in CODES]
        for (truth, answer), count in cells.items():
            matrix[index[truth]][index[answer]] = count
        return matrix

    assert report["confusion"]["task1"] == expected({
        ("mel", "nv"): 3, ("mel", "mel"): 1, ("nv", "nv"): 1, ("nv", "mel"): 1, ("bcc", "bcc"): 2, ("bkl", "nv"): 1,
    })
    assert report["confusion"]["task2"] == expected({
        ("mel", "mel"): 3, ("nv", "nv"): 2, ("bcc", "bkl"): 1, ("bkl", "bkl"): 1,
    })


def test_per_class_sensitivity_and_specificity(report):
    task1, task2 = report["per_class"]["task1"], report["per_class"]["task2"]
    # Task 1, 9 reads: mel 1 of 4 found, 1 of 5 others called mel
    assert task1["mel"] == {"sensitivity": 0.25, "specificity": 0.8, "n": 4}
    # nv: 1 of 2 found; alice c1, c4, bob c5, carol c4 called nv among the 7 others
    assert task1["nv"] == {"sensitivity": 0.5, "specificity": approx(3 / 7), "n": 2}
    assert task1["bcc"] == {"sensitivity": 1.0, "specificity": 1.0, "n": 2}
    assert task1["bkl"] == {"sensitivity": 0.0, "specificity": 1.0, "n": 1}
    assert task1["akiec"] == {"sensitivity": None, "specificity": 1.0, "n": 0}
    # Task 2, 7 reads: alice called bcc c3 bkl
    assert task2["bcc"] == {"sensitivity": 0.0, "specificity": 1.0, "n": 1}
    assert task2["bkl"] == {"sensitivity": 1.0, "specificity": approx(5 / 6), "n": 1}
    assert task2["mel"] == {"sensitivity": 1.0, "specificity": 1.0, "n": 3}


def test_melanoma_false_positives(report):
    # Task 1: bob called nv c2 mel; Task 2: nobody
    assert report["melanoma_false_positives"] == {"task1": 1, "task2": 0}


def test_mcnemar_per_reader_only(report):
    mcnemar = report["statistics"]["mcnemar"]
    by_reader = {row["reader"]: row for row in mcnemar["per_reader"]}
    # alice: 2 wrong->right, 1 right->wrong: P(X<=1) + P(X>=2) of Bin(3, 1/2) covers everything
    assert by_reader["alice"] == {"reader": "alice", "n_pairs": 4, "wrong_to_right": 2, "right_to_wrong": 1,
                                  "p_value": approx(1.0)}
    # bob: 2 vs 0 -> 2 * (1/2)^2
    assert by_reader["bob"]["p_value"] == approx(0.5)
    assert by_reader["carol"] == {"reader": "carol", "n_pairs": 0, "wrong_to_right": 0, "right_to_wrong": 0,
                                  "p_value": 1.0}
    # No pooled test: it would treat 7 reads of 2 readers as independent.
    assert "pooled" not in mcnemar and "descriptive per-reader" in mcnemar["note"]


def test_accuracy_difference_is_a_descriptive_mean_pointing_to_the_mrmc(report):
    difference = report["statistics"]["accuracy_difference"]
    # per pair Task 2 - Task 1: alice +1, 0, -1, +1; bob 0, +1, +1 -> 3 / 7
    assert difference["estimate"] == approx(3 / 7)
    assert (difference["n_pairs"], difference["n_readers"]) == (7, 2)
    assert "ci95" not in difference and "mrmc.accuracy" in difference["note"]


def test_changes_count_both_ways_the_vote_stood(report):
    changes = report["changes"]
    # wrong -> right: alice c1 (vote mel = Task 2), alice c4 (vote nv = Task 1), bob c2 (nv = Task 2),
    # bob c5 (bkl = Task 2); right -> wrong: alice c3 (vote bkl = Task 2 answer, not the Task 1 bcc)
    assert (changes["wrong_to_right"], changes["right_to_wrong"]) == (4, 1)
    assert changes["wrong_to_right_agreeing_with_majority_vote"] == 3
    assert changes["wrong_to_right_majority_vote_agreed_with_task1"] == 1
    assert changes["right_to_wrong_agreeing_with_majority_vote"] == 1
    assert changes["right_to_wrong_majority_vote_agreed_with_task1"] == 0


def test_wilcoxon_on_paired_confidences_per_reader_matches_scipy(report):
    wilcoxon = {row["reader"]: row for row in report["statistics"]["wilcoxon_confidence"]["per_reader"]}
    # Task 2 - Task 1 confidence: alice 2, 1, 0, 1; bob 0, 2, 2
    alice = wilcoxon["alice"]
    assert (alice["n_pairs"], alice["n_nonzero"], alice["median_difference"]) == (4, 3, 1.0)
    assert alice["statistic"] == 0.0  # no negative difference
    assert alice["p_value"] == approx(float(scipy_stats.wilcoxon([2, 1, 0, 1]).pvalue))
    assert wilcoxon["bob"]["p_value"] == approx(float(scipy_stats.wilcoxon([0, 2, 2]).pvalue))
    assert wilcoxon["carol"]["note"] == "no paired reads"
    assert "pooled" not in report["statistics"]["wilcoxon_confidence"]


def test_wilcoxon_is_undefined_when_nothing_changes():
    reads = [Read("a", "c1", "mel", 1, "mel", 3), Read("a", "c1", "mel", 2, "mel", 3)]
    wilcoxon = build_report(reads)["statistics"]["wilcoxon_confidence"]["per_reader"][0]
    assert (wilcoxon["statistic"], wilcoxon["p_value"]) == (None, None)
    assert "zero" in wilcoxon["note"]


def test_kappa_between_every_pair_of_readers(report):
    kappa = {(row["reader_a"], row["reader_b"], row["task"]): (row["n_shared"], row["kappa"])
             for row in report["statistics"]["kappa"]}
    assert len(kappa) == 6  # 3 reader pairs x 2 tasks
    # Task 1 on c1, c2: alice nv, nv; bob mel, mel -> observed 0, chance 0
    assert kappa["alice", "bob", 1] == (2, 0.0)
    # Task 2: both mel, nv -> observed 1, chance 1/2
    assert kappa["alice", "bob", 2] == (2, 1.0)
    assert kappa["alice", "carol", 1] == (2, 1.0)
    assert kappa["alice", "carol", 2] == (0, None)
    assert kappa["bob", "carol", 1] == (0, None)


def test_relevance_ndcg_at_6_with_pooled_ideal(report):
    relevance = report["relevance"]
    # alice c1: pool of secbir (3, 2, 0) and cnn3 (1, 3, 0) -> ideal order 3, 3, 2, 1, 0, 0
    ideal = 3 / 1 + 3 / math.log2(3) + 2 / 2 + 1 / math.log2(5)
    secbir_c1 = (3 / 1 + 2 / math.log2(3)) / ideal
    cnn3_c1 = (1 / 1 + 3 / math.log2(3)) / ideal
    # alice c2: every rating 0 -> nDCG 0 for both; bob c1: secbir alone, one rating 2 -> 1
    assert relevance["ndcg_at"] == 6
    assert relevance["per_reader"] == [
        {"reader": "alice", "method": "cnn3", "ndcg": approx(cnn3_c1 / 2), "n_cases": 2},
        {"reader": "alice", "method": "secbir", "ndcg": approx(secbir_c1 / 2), "n_cases": 2},
        {"reader": "bob", "method": "secbir", "ndcg": 1.0, "n_cases": 1},
    ]
    assert relevance["per_method"] == [
        {"method": "cnn3", "ndcg": approx(cnn3_c1 / 2), "n_cases": 2},
        {"method": "secbir", "ndcg": approx((secbir_c1 + 0 + 1) / 3), "n_cases": 3},
    ]
    assert secbir_c1 == approx(0.674, abs=1e-3)


def test_relevance_ignores_ranks_beyond_6_in_the_gain():
    ratings = [RelevanceRating("a", "c1", "m", rank, 1) for rank in range(1, 8)]
    relevance = build_report([], ratings=ratings)["relevance"]
    assert relevance["per_method"] == [{"method": "m", "ndcg": approx(1.0), "n_cases": 1}]


def test_no_ratings_no_relevance():
    assert build_report(study_reads())["relevance"] is None


def test_report_is_json_without_nan(report):
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report


def test_empty_study_gives_zeros_and_none():
    report = build_report([])
    assert (report["n_reads"], report["readers"]) == (0, [])
    assert report["summary"]["task1"]["accuracy"] == {"mean": None, "std": None}
    assert report["statistics"]["accuracy_difference"]["estimate"] is None
    assert report["mrmc"]["accuracy"]["refused"] == "no (reader, case) pair has been read in both tasks yet"
    json.dumps(report, allow_nan=False)


def test_single_reader_has_no_std():
    reads = [Read("a", "c1", "mel", 1, "mel", 3, "mel"), Read("a", "c1", "mel", 2, "mel", 4, "mel")]
    summary = build_report(reads)["summary"]
    assert summary["task1"]["accuracy"] == {"mean": 1.0, "std": None}
    assert summary["majority_vote_accuracy"] == {"mean": 1.0, "std": None}


def test_readers_sort_naturally():
    reads = [Read(name, "c1", "nv", 1, "nv", 3) for name in ("reader 10", "reader 2", "Reader 1")]
    assert [row["reader"] for row in build_report(reads)["readers"]] == \
        ["Reader 1", "reader 2", "reader 10"]


def test_invalid_reads_are_refused_with_every_problem():
    reads = [
        Read("a", "c1", "mel", 1, "MEL", 3),
        Read("a", "c2", "nv", 2, "nv", 9),
        Read("a", "c1", "nv", 1, "nv", 3),
    ]
    with pytest.raises(ValueError) as error:
        build_report(reads)
    message = str(error.value)
    assert "read 1: answer 'MEL' is not a class code" in message
    assert "read 2: confidence 9 is not an integer from 1 to 5" in message
    assert "read 2: reader 'a' has Task 2 of case 'c2' but no Task 1 read of it" in message
    assert "read 3: reader 'a' has Task 1 of case 'c1' more than once (also read 1)" in message
    assert "read 3: case 'c1' has truth 'nv' here but 'mel' on read 1" in message


def test_invalid_ratings_are_refused():
    ratings = [RelevanceRating("a", "c1", "m", 0, 4), RelevanceRating("a", "c1", "m", 1, 1),
               RelevanceRating("a", "c1", "m", 1, 2)]
    with pytest.raises(ValueError) as error:
        build_report([], ratings=ratings)
    message = str(error.value)
    assert "rating 1: rank 0 is not a positive integer" in message
    assert "rating 1: rating 4 is not an integer from 0 to 3" in message
    assert "rating 3: reader 'a' rated rank 1 of 'm' for case 'c1' already" in message
