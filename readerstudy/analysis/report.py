"""The reader-study report (thesis Table 4.II and what goes with it) as one JSON-ready dict.

Definitions, as in SPEC.md "Reader study protocol" and docs/readerstudy.md:

- A *pair* is a (reader, case) with both a Task 1 and a Task 2 read; changes, McNemar, the
  bootstrap interval and the Wilcoxon test are over pairs.
- A case's truth and majority vote are properties of the case (checked to agree across reads).
- Accuracies are fractions in [0, 1]; anything undefined (no reads, a single reader's standard
  deviation, a sensitivity without positives) is ``None``, never NaN.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

from readerstudy.analysis import statistics
from readerstudy.analysis.endpoints import mrmc_section
from readerstudy.analysis.viewing import NeighbourView, viewing_summary
from readerstudy.analysis.reads import (
    MELANOMA, TASK_IMAGE_ALONE, TASK_WITH_NEIGHBOURS, TASKS, Read, RelevanceRating, check_ratings, check_reads,
    natural_key,
)
from retrieval.classes import CODES

#: What the per-reader tests are, said wherever they are shown.
PER_READER_NOTE = (
    "descriptive per-reader figures: each reader's test uses only that reader's cases and says nothing about "
    "readers in general; the inference across readers and cases is the MRMC analysis (mrmc)"
)


def build_report(reads: Sequence[Read], *, ratings: Sequence[RelevanceRating] = (), design: str | None = None,
                 views: Sequence[NeighbourView] | None = None) -> dict:
    """Every figure of the report; raises ``ValueError`` listing every problem with the input.

    ``reads`` may be empty (a study nobody has read yet): counts are then 0 and figures ``None``.
    ``design`` is the study's design when known (``crossed``, ``nested`` or ``overlapping``); the
    MRMC section finds it from the reads otherwise. ``views``: the neighbour enlargements of
    Task 2 (``readerstudy.analysis.viewing``), summarised in ``viewing`` when given.
    """
    reads, ratings = list(reads), list(ratings)
    _refuse("reads", check_reads(reads))
    _refuse("ratings", check_ratings(ratings))

    study = _Study(reads)
    rows = [study.reader_row(reader) for reader in study.readers]
    return {
        "readers": rows,
        "summary": study.summary(rows),
        "changes": study.changes(),
        "confusion": {"classes": list(CODES), **{_task_key(task): study.confusion(task) for task in TASKS}},
        "per_class": {_task_key(task): study.per_class(task) for task in TASKS},
        "melanoma_false_positives": {
            _task_key(task): sum(1 for r in study.by_task[task] if r.answer == MELANOMA and r.truth != MELANOMA)
            for task in TASKS
        },
        "statistics": {
            "note": PER_READER_NOTE,
            "mcnemar": study.mcnemar(),
            "accuracy_difference": study.accuracy_difference(),
            "wilcoxon_confidence": study.wilcoxon(),
            "kappa": study.kappa(),
        },
        "mrmc": mrmc_section(reads, design=design),
        "relevance": relevance(ratings) if ratings else None,
        "viewing": viewing_summary(reads, views) if views is not None else None,
        "n_reads": len(reads),
        "n_readers": len(study.readers),
        "n_cases": len(study.truth),
    }


def relevance(ratings: Sequence[RelevanceRating]) -> dict:
    """nDCG@6 per reader and method, and per method over all rated (reader, case) pairs.

    The ideal ordering of a (reader, case) pools the ratings of every method's shown neighbours
    (TREC-style pooling), so a method is scored against the best that any method showed.
    """
    shown: dict[tuple[str, str], dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for rating in ratings:
        shown[rating.reader, rating.case][rating.method][rating.rank] = rating.rating
    per_reader: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (reader, _case), methods in shown.items():
        pooled = [value for by_rank in methods.values() for value in by_rank.values()]
        for method, by_rank in methods.items():
            per_reader[reader, method].append(statistics.ndcg(by_rank, pooled))
    per_method: dict[str, list[float]] = defaultdict(list)
    for (_reader, method), values in per_reader.items():
        per_method[method] += values
    return {
        "ndcg_at": statistics.NDCG_AT,
        "per_reader": [
            {"reader": reader, "method": method, "ndcg": statistics.mean(values), "n_cases": len(values)}
            for (reader, method), values in sorted(per_reader.items(),
                                                  key=lambda item: (natural_key(item[0][0]), item[0][1]))
        ],
        "per_method": [
            {"method": method, "ndcg": statistics.mean(values), "n_cases": len(values)}
            for method, values in sorted(per_method.items())
        ],
    }


class _Study:
    """The reads indexed the ways the figures need them."""

    def __init__(self, reads: list[Read]):
        self.truth = {read.case: read.truth for read in reads}
        self.votes = {read.case: read.majority_vote for read in reads if read.majority_vote is not None}
        self.readers = sorted({read.reader for read in reads}, key=natural_key)
        self.by_task: dict[int, list[Read]] = {task: [r for r in reads if r.task == task] for task in TASKS}
        self.by_reader: dict[str, list[Read]] = defaultdict(list)
        for read in reads:
            self.by_reader[read.reader].append(read)
        first = {(r.reader, r.case): r for r in self.by_task[TASK_IMAGE_ALONE]}
        # Task 2 reads always have their Task 1 read (check_reads), so every Task 2 read makes a pair.
        self.pairs: dict[str, list[tuple[Read, Read]]] = {reader: [] for reader in self.readers}
        for second in self.by_task[TASK_WITH_NEIGHBOURS]:
            self.pairs[second.reader].append((first[second.reader, second.case], second))
        self.all_pairs = [pair for reader in self.readers for pair in self.pairs[reader]]

    def reader_row(self, reader: str) -> dict:
        reads = self.by_reader[reader]
        cases = {read.case for read in reads}
        voted = [case for case in cases if case in self.votes]
        return {
            "reader": reader,
            "n_cases": len(cases),
            "majority_vote_accuracy": (sum(self.votes[c] == self.truth[c] for c in voted) / len(voted)
                                       if voted else None),
            **{_task_key(task): _task_figures([r for r in reads if r.task == task]) for task in TASKS},
        }

    def summary(self, rows: list[dict]) -> dict:
        """Mean and std over readers of the accuracies; confidences pooled over all reads."""
        summary = {"majority_vote_accuracy": statistics.mean_std(
            [row["majority_vote_accuracy"] for row in rows if row["majority_vote_accuracy"] is not None])}
        for task in TASKS:
            key = _task_key(task)
            pooled = _task_figures(self.by_task[task])
            summary[key] = {
                "accuracy": statistics.mean_std(
                    [row[key]["accuracy"] for row in rows if row[key]["accuracy"] is not None]),
                "confidence": pooled["confidence"],
                "confidence_correct": pooled["confidence_correct"],
                "confidence_wrong": pooled["confidence_wrong"],
                "n": pooled["n"],
            }
        return summary

    def changes(self) -> dict:
        """Changes of diagnosis between the tasks, and how the neighbours' vote stood to each:
        ``..._agreeing_with_majority_vote`` counts Task 2 answers equal to the vote; the thesis's
        "changed although the vote agreed with the Task 1 diagnosis" (8 of its 20 right -> wrong
        changes) is ``..._majority_vote_agreed_with_task1``."""
        wrong_to_right = [(t1, t2) for t1, t2 in self.all_pairs if not t1.correct and t2.correct]
        right_to_wrong = [(t1, t2) for t1, t2 in self.all_pairs if t1.correct and not t2.correct]
        return {
            "n_pairs": len(self.all_pairs),
            "wrong_to_right": len(wrong_to_right),
            "right_to_wrong": len(right_to_wrong),
            "wrong_to_right_agreeing_with_majority_vote": self._agreeing([t2 for _, t2 in wrong_to_right]),
            "right_to_wrong_agreeing_with_majority_vote": self._agreeing([t2 for _, t2 in right_to_wrong]),
            "wrong_to_right_majority_vote_agreed_with_task1": self._agreeing([t1 for t1, _ in wrong_to_right]),
            "right_to_wrong_majority_vote_agreed_with_task1": self._agreeing([t1 for t1, _ in right_to_wrong]),
        }

    def _agreeing(self, reads: list[Read]) -> int:
        """How many of ``reads`` answered the case's neighbour vote."""
        return sum(1 for read in reads if self.votes.get(read.case) == read.answer)

    def confusion(self, task: int) -> list[list[int]]:
        index = {code: i for i, code in enumerate(CODES)}
        matrix = [[0] * len(CODES) for _ in CODES]
        for read in self.by_task[task]:
            matrix[index[read.truth]][index[read.answer]] += 1
        return matrix

    def per_class(self, task: int) -> dict:
        reads = self.by_task[task]
        figures = {}
        for code in CODES:
            positives = [r for r in reads if r.truth == code]
            negatives = [r for r in reads if r.truth != code]
            figures[code] = {
                "sensitivity": _fraction(sum(r.answer == code for r in positives), len(positives)),
                "specificity": _fraction(sum(r.answer != code for r in negatives), len(negatives)),
                "n": len(positives),
            }
        return figures

    def mcnemar(self) -> dict:
        """Exact McNemar per reader (no pooled test: pooling treats reads as independent)."""
        return {"per_reader": [{"reader": reader, **_mcnemar(self.pairs[reader])} for reader in self.readers],
                "note": PER_READER_NOTE}

    def accuracy_difference(self) -> dict:
        """Mean of Task 2 minus Task 1 correctness over the pairs (descriptive; CI and test in mrmc)."""
        pooled = [int(t2.correct) - int(t1.correct) for t1, t2 in self.all_pairs]
        return {
            "estimate": statistics.mean(pooled),
            "n_pairs": len(pooled),
            "n_readers": sum(1 for pairs in self.pairs.values() if pairs),
            "note": "descriptive mean over (reader, case) pairs; its confidence interval and test across "
                    "readers and cases: mrmc.accuracy",
        }

    def wilcoxon(self) -> dict:
        """Wilcoxon signed-rank test of each reader's paired confidences (Task 2 - Task 1)."""
        return {"per_reader": [{"reader": reader, **statistics.wilcoxon_signed_rank(
            [t2.confidence - t1.confidence for t1, t2 in self.pairs[reader]])} for reader in self.readers],
            "note": PER_READER_NOTE}

    def kappa(self) -> list[dict]:
        answers: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
        for task in TASKS:
            for read in self.by_task[task]:
                answers[read.reader, task][read.case] = read.answer
        rows = []
        for reader_a, reader_b in itertools.combinations(self.readers, 2):
            for task in TASKS:
                a, b = answers.get((reader_a, task), {}), answers.get((reader_b, task), {})
                shared = sorted(a.keys() & b.keys())
                rows.append({
                    "reader_a": reader_a, "reader_b": reader_b, "task": task, "n_shared": len(shared),
                    "kappa": statistics.cohen_kappa([a[c] for c in shared], [b[c] for c in shared]),
                })
        return rows


def _task_figures(reads: list[Read]) -> dict:
    correct = [r.confidence for r in reads if r.correct]
    wrong = [r.confidence for r in reads if not r.correct]
    return {
        "accuracy": _fraction(len(correct), len(reads)),
        "confidence": statistics.mean([r.confidence for r in reads]),
        "confidence_correct": statistics.mean(correct),
        "confidence_wrong": statistics.mean(wrong),
        "n": len(reads),
    }


def _mcnemar(pairs: list[tuple[Read, Read]]) -> dict:
    wrong_to_right = sum(1 for t1, t2 in pairs if not t1.correct and t2.correct)
    right_to_wrong = sum(1 for t1, t2 in pairs if t1.correct and not t2.correct)
    return {
        "n_pairs": len(pairs),
        "wrong_to_right": wrong_to_right,
        "right_to_wrong": right_to_wrong,
        "p_value": statistics.mcnemar_exact(wrong_to_right, right_to_wrong),
    }


def _fraction(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _task_key(task: int) -> str:
    return f"task{task}"


def _refuse(what: str, problems: list[tuple[int, str]]) -> None:
    if problems:
        raise ValueError(f"invalid {what}:\n" + "\n".join(f"{what[:-1]} {position}: {message}"
                                                         for position, message in problems))
