"""The reader study's MRMC endpoints: Task 1 (image alone) vs Task 2 (with similar cases) as the
two treatments of a multi-reader multi-case analysis (``readerstudy.analysis.mrmc``).

- ``accuracy`` (primary, the thesis's figure): proportion of correct diagnoses. Rating 1 when the
  answer is the truth, 0 otherwise; truth is 1 for every case (so that the exported files read in
  MRMCaov as ``binary_sens(truth, rating)``, the proportion correct).
- ``auc_melanoma``: melanoma vs not; ``auc_malignant``: malignant (mel, bcc, akiec) vs benign. The
  empirical AUC of a 10-point suspicion rating made from the class answered and the Likert
  confidence (``suspicion``): an answer in the positive group rates 5 + confidence (6..10, 10 =
  sure it is positive), any other answer 6 - confidence (1..5, 1 = sure it is not).

Only (reader, case) pairs read in both tasks enter. In a fully crossed study, only the cases
every reader has read in both tasks enter (a reader still reading would otherwise break the
design); the result says how many pairs were left out.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from readerstudy.analysis.mrmc import DesignRefused, Rating, RatingsInvalid, analyse
from readerstudy.analysis.mrmc import power as mrmc_power
from readerstudy.analysis.reads import MELANOMA, TASK_IMAGE_ALONE, TASK_WITH_NEIGHBOURS, TASKS, Read

MALIGNANT = ("mel", "bcc", "akiec")
TREATMENTS = {TASK_IMAGE_ALONE: "task1", TASK_WITH_NEIGHBOURS: "task2"}
TREATMENT_LABELS = {"task1": "Task 1 (image alone)", "task2": "Task 2 (with similar cases)"}
ENDPOINTS = {
    "accuracy": {"fom": "accuracy", "positive": None,
                 "label": "proportion of correct diagnoses (primary endpoint)"},
    "auc_melanoma": {"fom": "auc", "positive": (MELANOMA,),
                     "label": "AUC of melanoma vs not, from the answer and its confidence"},
    "auc_malignant": {"fom": "auc", "positive": MALIGNANT,
                      "label": "AUC of malignant (mel, bcc, akiec) vs benign, from the answer and its confidence"},
}
PRIMARY = "accuracy"
SUSPICION_SCALE = ("10-point suspicion: an answer in the positive group rates 5 + confidence (6..10), any other "
                   "answer 6 - confidence (1..5)")
#: Studies whose readers read overlapping random samples (before designs) have no MRMC analysis.
CROSSED, NESTED, OVERLAPPING = "crossed", "nested", "overlapping"


def suspicion(answer: str, confidence: int, positive: Sequence[str]) -> int:
    """The 10-point suspicion rating of an answer for the positive group ``positive``."""
    return 5 + confidence if answer in positive else 6 - confidence


def paired_reads(reads: Sequence[Read], design: str | None = None) -> tuple[list[Read], dict]:
    """The reads of (reader, case) pairs with both tasks; for a crossed design only the cases every
    reader has paired. Returns the reads kept and counts of what was left out."""
    by_pair: dict[tuple[str, str], dict[int, Read]] = defaultdict(dict)
    for read in reads:
        by_pair[read.reader, read.case][read.task] = read
    complete = {pair: tasks for pair, tasks in by_pair.items() if all(t in tasks for t in TASKS)}
    counts = {"pairs": len(by_pair), "unpaired_left_out": len(by_pair) - len(complete), "not_common_left_out": 0}
    if design == CROSSED and complete:
        readers = {reader for reader, _ in complete}
        cases_of: dict[str, set[str]] = defaultdict(set)
        for reader, case in complete:
            cases_of[reader].add(case)
        common = set.intersection(*cases_of.values())
        kept = {pair: tasks for pair, tasks in complete.items() if pair[1] in common}
        counts["not_common_left_out"] = len(complete) - len(kept)
        complete = kept
        counts["readers"] = len(readers)
    counts["analysed_pairs"] = len(complete)
    return [tasks[t] for tasks in complete.values() for t in TASKS], counts


def endpoint_ratings(reads: Sequence[Read], endpoint: str) -> list[Rating]:
    """The MRMC ratings of ``endpoint`` (see the module's docstring) for paired reads."""
    spec = ENDPOINTS[endpoint]
    ratings = []
    for read in reads:
        if spec["positive"] is None:
            truth, rating = 1, int(read.correct)
        else:
            truth = int(read.truth in spec["positive"])
            rating = suspicion(read.answer, read.confidence, spec["positive"])
        ratings.append(Rating(read.reader, TREATMENTS[read.task], read.case, truth, float(rating)))
    return ratings


def mrmc_section(reads: Sequence[Read], *, design: str | None = None, alpha: float = 0.05,
                 target_power: float = mrmc_power.DEFAULT_POWER) -> dict:
    """``{"accuracy": result, "auc_melanoma": result, "auc_malignant": result, ...}`` where a
    result is the ``mrmc.analyse`` dict (with the endpoint's definition and a sample-size table),
    or ``{"refused": why}`` when the reads cannot be analysed for that endpoint."""
    section: dict = {"treatment_labels": TREATMENT_LABELS, "primary": PRIMARY, "suspicion_rating": SUSPICION_SCALE,
                     "study_design": design}
    if design == OVERLAPPING:
        reason = ("this study's readers read overlapping random samples (it was created before study designs), "
                  "which is neither fully crossed nor nested: no MRMC analysis is possible. Create new studies "
                  "as fully crossed or nested.")
        return {**section, **{endpoint: {"refused": reason, "label": spec["label"]}
                              for endpoint, spec in ENDPOINTS.items()}}
    paired, counts = paired_reads(reads, design)
    section["pairs"] = counts
    for endpoint, spec in ENDPOINTS.items():
        if not paired:
            section[endpoint] = {"refused": "no (reader, case) pair has been read in both tasks yet",
                                 "label": spec["label"]}
            continue
        try:
            result = analyse(endpoint_ratings(paired, endpoint), fom=spec["fom"], alpha=alpha)
        except (DesignRefused, RatingsInvalid) as exc:
            section[endpoint] = {"refused": str(exc), "label": spec["label"]}
            continue
        result["endpoint"] = endpoint
        result["label"] = spec["label"]
        result["treatment_labels"] = TREATMENT_LABELS
        if spec["positive"] is not None:
            result["positive_classes"] = list(spec["positive"])
            result["rating_scale"] = SUSPICION_SCALE
        result["sample_size"] = planned_sample_size(result, target_power=target_power)
        section[endpoint] = result
    return section


def planned_sample_size(result: dict, *, effect: float | None = None,
                        target_power: float = mrmc_power.DEFAULT_POWER) -> dict | None:
    """Readers x cases for a planned study from this one as the pilot (None with fewer than two
    readers or no difference to plan for). ``effect`` defaults to the observed difference."""
    rrrc = result["random_readers_random_cases"]
    if rrrc["F"] is None or not rrrc["differences"]:
        return None
    if effect is None:
        effect = abs(rrrc["differences"][0]["difference"])
        chosen = "the difference observed in this study"
    else:
        chosen = "the difference given"
    if effect <= 0:
        return None
    if result["design"] == "factorial":
        pilot = result["n_cases"]
    else:  # the error variances average the readers' own: their harmonic mean number of cases
        counts = list(result["cases_per_reader"].values())
        pilot = round(len(counts) / sum(1 / k for k in counts))
    table = mrmc_power.sample_size_table(result["variance_components"], pilot_cases=pilot, effect=effect,
                                         target=target_power, alpha=result["alpha"],
                                         nested=result["design"] != "factorial")
    table["effect_is"] = chosen
    return table
