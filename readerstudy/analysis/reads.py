"""The input of the analysis: one reader's answer to one case in one task, and relevance ratings.

Plain values, no Django: the app builds them from its rows, the ``readerstudy_report`` command
from a CSV file (``responses.parse_responses``). Both paths go through the same checks
(``field_problems`` for one read, ``consistency_problems`` across reads), so a report never rests
on reads that the CSV validator would have refused.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from retrieval.classes import CODES

#: Task 1 shows the image alone; Task 2 the same image rotated by 180 degrees plus its six
#: most similar images from SE-CBIR (thesis 3.4).
TASK_IMAGE_ALONE = 1
TASK_WITH_NEIGHBOURS = 2
TASKS = (TASK_IMAGE_ALONE, TASK_WITH_NEIGHBOURS)

#: Likert scale of the reader's confidence.
CONFIDENCE_LABELS = {
    1: "not confident at all",
    2: "slightly confident",
    3: "somewhat confident",
    4: "fairly confident",
    5: "completely confident",
}
CONFIDENCE_MIN, CONFIDENCE_MAX = min(CONFIDENCE_LABELS), max(CONFIDENCE_LABELS)

#: Graded relevance of one shown neighbour to its query (the gains of nDCG).
RELEVANCE_LABELS = {0: "not relevant", 1: "somewhat relevant", 2: "relevant", 3: "highly relevant"}
RELEVANCE_MIN, RELEVANCE_MAX = min(RELEVANCE_LABELS), max(RELEVANCE_LABELS)

MELANOMA = "mel"


@dataclass(frozen=True)
class Read:
    """One reader's diagnosis of one case in one task."""

    reader: str
    case: str
    truth: str  # class code
    task: int  # TASK_IMAGE_ALONE or TASK_WITH_NEIGHBOURS
    answer: str  # class code
    confidence: int  # Likert CONFIDENCE_MIN..CONFIDENCE_MAX
    majority_vote: str | None = None  # the neighbours' majority vote (ties broken by rank), when known
    seconds: float | None = None  # time spent on the case, when known

    @property
    def correct(self) -> bool:
        return self.answer == self.truth


@dataclass(frozen=True)
class RelevanceRating:
    """A reader's relevance rating of the neighbour a retrieval method showed at ``rank``."""

    reader: str
    case: str
    method: str  # retrieval method name, e.g. "secbir"
    rank: int  # 1..k, the neighbour's rank as shown
    rating: int  # RELEVANCE_MIN..RELEVANCE_MAX


@dataclass(frozen=True)
class ReadFields:
    """What could be made of one read's fields, ``None`` where a field was invalid.

    The cross-read checks work on these so that one bad field (say, a confidence of 7) does not
    hide the read from them, nor make a later Task 2 read look as if it had no Task 1 read.
    """

    position: int
    reader: str | None
    case: str | None
    task: int | None
    truth: str | None
    majority_vote: str | None

    @classmethod
    def keeping_valid(cls, position: int, *, reader: object, case: object, task: object, truth: object,
                      majority_vote: object) -> ReadFields:
        """The fields with every invalid value replaced by ``None``."""
        return cls(
            position,
            reader if isinstance(reader, str) and reader.strip() else None,
            case if isinstance(case, str) and case.strip() else None,
            task if _is_int(task) and task in TASKS else None,
            truth if truth in CODES else None,
            majority_vote if majority_vote in CODES else None,
        )


def describe_class_problem(value: str, what: str) -> str:
    """Why ``value`` is not a class code, with a hint for the near misses."""
    message = f"{what} {value!r} is not a class code (one of {', '.join(CODES)})"
    if value.strip().lower() in CODES:
        message += f"; codes are lower case without spaces: {value.strip().lower()!r}"
    return message


def field_problems(
    *, reader: object, case: object, truth: object, task: object, answer: object, confidence: object,
    majority_vote: object = None, seconds: object = None,
) -> list[str]:
    """Problems with one read's values taken one at a time (types included), in field order."""
    problems = []
    for name, value in (("reader", reader), ("case", case)):
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} is empty")
    if truth not in CODES:
        problems.append(describe_class_problem(str(truth), "truth"))
    if not _is_int(task) or task not in TASKS:
        problems.append(f"task {task!r} is not {' or '.join(map(str, TASKS))}")
    if answer not in CODES:
        problems.append(describe_class_problem(str(answer), "answer"))
    if not _is_int(confidence) or not CONFIDENCE_MIN <= confidence <= CONFIDENCE_MAX:
        problems.append(f"confidence {confidence!r} is not an integer from {CONFIDENCE_MIN} to {CONFIDENCE_MAX}")
    if majority_vote is not None and majority_vote not in CODES:
        problems.append(describe_class_problem(str(majority_vote), "majority_vote"))
    if seconds is not None and (
        not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0
    ):
        problems.append(f"seconds {seconds!r} is not a non-negative number")
    return problems


def consistency_problems(rows: Iterable[ReadFields], where: str = "line") -> list[tuple[int, str]]:
    """Problems across reads, as (position, message): duplicates, Task 2 without Task 1, conflicts.

    A duplicated (reader, case, task) is reported at every position it occurs, each message
    naming the other positions. A conflicting truth or majority vote is reported where it
    differs from the first one given for that case.
    """
    rows = list(rows)
    problems: list[tuple[int, str]] = []
    positions: dict[tuple[str, str, int], list[int]] = {}
    for row in rows:
        if row.reader is not None and row.case is not None and row.task is not None:
            positions.setdefault((row.reader, row.case, row.task), []).append(row.position)
    for (reader, case, task), found in positions.items():
        for position in found if len(found) > 1 else ():
            others = ", ".join(str(p) for p in found if p != position)
            problems.append((position, f"reader {reader!r} has Task {task} of case {case!r} more than once "
                                       f"(also {where} {others})"))
    for row in rows:
        if row.task == TASK_WITH_NEIGHBOURS and row.reader is not None and row.case is not None \
                and (row.reader, row.case, TASK_IMAGE_ALONE) not in positions:
            problems.append((row.position, f"reader {row.reader!r} has Task {TASK_WITH_NEIGHBOURS} of case "
                                           f"{row.case!r} but no Task {TASK_IMAGE_ALONE} read of it"))
    for attribute in ("truth", "majority_vote"):
        first: dict[str, tuple[str, int]] = {}
        for row in rows:
            value = getattr(row, attribute)
            if row.case is None or value is None:
                continue
            if row.case not in first:
                first[row.case] = (value, row.position)
            elif first[row.case][0] != value:
                known, position = first[row.case]
                problems.append((row.position, f"case {row.case!r} has {attribute} {value!r} here but {known!r} "
                                               f"on {where} {position}"))
    return sorted(problems, key=lambda problem: problem[0])


def check_reads(reads: Sequence[Read]) -> list[tuple[int, str]]:
    """Every problem with ``reads`` as (1-based position, message); empty when they are fine."""
    problems = []
    for position, read in enumerate(reads, start=1):
        problems += [(position, message) for message in field_problems(
            reader=read.reader, case=read.case, truth=read.truth, task=read.task, answer=read.answer,
            confidence=read.confidence, majority_vote=read.majority_vote, seconds=read.seconds,
        )]
    problems += consistency_problems(
        (ReadFields.keeping_valid(position, reader=read.reader, case=read.case, task=read.task, truth=read.truth,
                                  majority_vote=read.majority_vote)
         for position, read in enumerate(reads, start=1)),
        where="read",
    )
    return sorted(problems, key=lambda problem: problem[0])


def check_ratings(ratings: Sequence[RelevanceRating]) -> list[tuple[int, str]]:
    """Every problem with ``ratings`` as (1-based position, message); empty when they are fine."""
    problems = []
    seen: dict[tuple[str, str, str, int], int] = {}
    for position, rating in enumerate(ratings, start=1):
        for name in ("reader", "case", "method"):
            value = getattr(rating, name)
            if not isinstance(value, str) or not value.strip():
                problems.append((position, f"{name} is empty"))
        if not _is_int(rating.rank) or rating.rank < 1:
            problems.append((position, f"rank {rating.rank!r} is not a positive integer"))
        if not _is_int(rating.rating) or not RELEVANCE_MIN <= rating.rating <= RELEVANCE_MAX:
            problems.append((position, f"rating {rating.rating!r} is not an integer from {RELEVANCE_MIN} "
                                       f"to {RELEVANCE_MAX}"))
        key = (rating.reader, rating.case, rating.method, rating.rank)
        if key in seen:
            problems.append((position, f"reader {rating.reader!r} rated rank {rating.rank} of {rating.method!r} "
                                       f"for case {rating.case!r} already (rating {seen[key]})"))
        else:
            seen[key] = position
    return problems


def natural_key(name: str) -> tuple:
    """Sort key that puts "reader 2" before "reader 10" (and treatment "2" before "10")."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(parts)), name


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
