"""What readers looked at in Task 2: their enlargements of the shown neighbours, as a CSV file and
a per-reader summary (issue 14). Plain values, no Django.

One enlargement is a ``NeighbourView``: the reader enlarged the neighbour shown at ``rank`` (of
class ``neighbour_class``) of ``case``, ``seconds_after_shown`` seconds after the case was shown,
for ``seconds_open`` seconds. The seconds count from the same moment as the Task 2 read's
``seconds`` (the showing on which the answer was given), so an enlargement came before the
answer exactly when ``seconds_after_shown < read.seconds``; it is negative for an enlargement
during an earlier showing of the case (the page was reloaded before answering), and larger than
the read's seconds when the reader came back to the case after answering.

Views file (header on line 1, any column order, header names case-insensitive)::

    reader,case,task,rank,neighbour_class,seconds_after_shown,seconds_open

``task`` is always 2 (Task 1 shows no neighbours); ``seconds_open`` may be empty (unknown).
``parse_views`` refuses a file as a whole, listing every offending line, as
``readerstudy.analysis.responses.parse_responses`` does.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from readerstudy.analysis.reads import (
    TASK_IMAGE_ALONE, TASK_WITH_NEIGHBOURS, Read, check_reads, describe_class_problem, natural_key,
)
from readerstudy.analysis.csvtable import integer_or_text, number_or_text, table_rows
from readerstudy.analysis.responses import ResponsesInvalid
from retrieval.classes import CODES

VIEW_COLUMNS = ("reader", "case", "task", "rank", "neighbour_class", "seconds_after_shown", "seconds_open")
VIEWS_FILE = "views.csv"

SUMMARY_NOTE = (
    "Per reader, over the cases read in Task 2: enlargements of a shown neighbour made before the Task 2 "
    "answer (the read's seconds). An answer change is a Task 2 answer other than the same reader's Task 1 "
    "answer for the case; it followed looking at a neighbour of the new class when, before answering, the "
    "reader enlarged a neighbour whose class is the Task 2 answer. Every neighbour's class is shown on the "
    "page without enlarging, so this counts closer looks, not what the reader saw; it is descriptive, not a "
    "causal effect. Reads without a time (untimed) cannot place their enlargements and are left out of the "
    "enlargement counts and of the share's denominator."
)


@dataclass(frozen=True)
class NeighbourView:
    """One enlargement of a Task 2 neighbour by a reader."""

    reader: str
    case: str
    task: int  # always TASK_WITH_NEIGHBOURS
    rank: int  # the neighbour's rank as shown, 1 = most similar
    neighbour_class: str  # class code of the enlarged neighbour (shown on its frame)
    seconds_after_shown: float  # from the showing the Task 2 answer was timed from (see the module's docstring)
    seconds_open: float | None = None  # how long it stayed open, when known


class ViewsInvalid(ResponsesInvalid):
    """The views file was refused; ``errors`` holds every (line number or None, message)."""


# --- Checks -----------------------------------------------------------------------------------

def view_problems(view: NeighbourView) -> list[str]:
    """Problems with one view's values taken one at a time (types included), in field order."""
    problems = []
    for name in ("reader", "case"):
        value = getattr(view, name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} is empty")
    if not _is_int(view.task) or view.task != TASK_WITH_NEIGHBOURS:
        problems.append(f"task {view.task!r} is not {TASK_WITH_NEIGHBOURS} (only Task {TASK_WITH_NEIGHBOURS} "
                        "shows neighbours)")
    if not _is_int(view.rank) or view.rank < 1:
        problems.append(f"rank {view.rank!r} is not a positive integer")
    if view.neighbour_class not in CODES:
        problems.append(describe_class_problem(str(view.neighbour_class), "neighbour_class"))
    if not _is_number(view.seconds_after_shown):
        problems.append(f"seconds_after_shown {view.seconds_after_shown!r} is not a number")
    if view.seconds_open is not None and (not _is_number(view.seconds_open) or view.seconds_open < 0):
        problems.append(f"seconds_open {view.seconds_open!r} is not a non-negative number")
    return problems


def _class_conflicts(rows: Sequence[tuple[int, str | None, int | None, str | None]],
                     where: str) -> list[tuple[int, str]]:
    """A case's neighbour at one rank is one library case: the same class on every row."""
    first: dict[tuple[str, int], tuple[str, int]] = {}
    problems = []
    for position, case, rank, neighbour_class in rows:
        if case is None or rank is None or neighbour_class is None:
            continue
        known = first.setdefault((case, rank), (neighbour_class, position))
        if known[0] != neighbour_class:
            problems.append((position, f"case {case!r} has neighbour_class {neighbour_class!r} at rank {rank} here "
                                       f"but {known[0]!r} on {where} {known[1]}"))
    return problems


def check_views(views: Sequence[NeighbourView]) -> list[tuple[int, str]]:
    """Every problem with ``views`` as (1-based position, message); empty when they are fine."""
    problems = [(position, message) for position, view in enumerate(views, start=1)
                for message in view_problems(view)]
    problems += _class_conflicts([(position, v.case, v.rank if _is_int(v.rank) else None,
                                   v.neighbour_class if v.neighbour_class in CODES else None)
                                  for position, v in enumerate(views, start=1)], "view")
    return sorted(problems, key=lambda problem: problem[0])


# --- The views file ---------------------------------------------------------------------------

def views_csv(views: Sequence[NeighbourView]) -> str:
    """``views`` as a views CSV (``VIEW_COLUMNS``) that ``parse_views`` reads back unchanged."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VIEW_COLUMNS)
    for view in views:
        writer.writerow([view.reader, view.case, view.task, view.rank, view.neighbour_class,
                         repr(float(view.seconds_after_shown)),
                         "" if view.seconds_open is None else repr(float(view.seconds_open))])
    return buffer.getvalue()


def parse_views(text: str) -> list[NeighbourView]:
    """The views in a views CSV's text, in file order; raises ``ViewsInvalid`` listing every problem.

    Accepts a leading UTF-8 byte order mark and CRLF line ends; a header without rows is no views.
    """
    errors: list[tuple[int | None, str]] = []
    views: list[NeighbourView] = []
    classes: list[tuple[int, str | None, int | None, str | None]] = []
    for line, cell in table_rows(text, required=VIEW_COLUMNS, errors=errors, invalid=ViewsInvalid):
        view = NeighbourView(reader=cell["reader"], case=cell["case"], task=integer_or_text(cell["task"]),
                             rank=integer_or_text(cell["rank"]), neighbour_class=cell["neighbour_class"],
                             seconds_after_shown=number_or_text(cell["seconds_after_shown"]),
                             seconds_open=number_or_text(cell["seconds_open"]))
        problems = view_problems(view)
        errors += [(line, message) for message in problems]
        classes.append((line, view.case or None, view.rank if _is_int(view.rank) else None,
                        view.neighbour_class if view.neighbour_class in CODES else None))
        if not problems:
            views.append(view)
    errors += _class_conflicts(classes, "line")
    if errors:
        raise ViewsInvalid(errors)
    return views


# --- The summary ------------------------------------------------------------------------------

_COUNTS = ("cases", "untimed_cases", "cases_with_enlargement", "enlargements", "enlargements_after_answer",
           "answer_changes", "untimed_changes", "changes_after_viewing_new_class")


def viewing_summary(reads: Sequence[Read], views: Sequence[NeighbourView]) -> dict:
    """Per reader (natural order) and pooled over readers, a JSON-ready dict (``None`` where undefined):

    - ``cases``: cases read in Task 2; ``untimed_cases``: those of them whose read has no
      ``seconds`` (their enlargements cannot be placed and are left out of the next three);
    - ``cases_with_enlargement``: cases with at least one enlargement before the answer;
      ``enlargements``: enlargements before the answer; ``enlargements_per_case``: enlargements
      per timed case; ``enlargements_after_answer``: enlargements on coming back after answering;
    - ``answer_changes``: cases whose Task 2 answer differs from the reader's Task 1 answer;
      ``untimed_changes``: those whose Task 2 read has no ``seconds``;
      ``changes_after_viewing_new_class``: changes where, before answering, the reader enlarged a
      neighbour whose class is the Task 2 answer; ``share_after_viewing_new_class``: that count
      over the timed changes.

    Enlargements of a case the reader has not answered in Task 2 are only counted
    (``views_without_task2_read``). Raises ``ValueError`` listing every problem of the reads
    (``read N: ...``, the report's checks) and of the views (``view N: ...``).
    """
    problems = [f"read {n}: {message}" for n, message in check_reads(reads)]
    problems += [f"view {n}: {message}" for n, message in check_views(views)]
    if problems:
        raise ValueError("\n".join(problems))
    first = {(r.reader, r.case): r for r in reads if r.task == TASK_IMAGE_ALONE}
    second = {(r.reader, r.case): r for r in reads if r.task == TASK_WITH_NEIGHBOURS}
    looked: dict[tuple[str, str], list[NeighbourView]] = {}
    without_read = 0
    for view in views:
        if (view.reader, view.case) in second:
            looked.setdefault((view.reader, view.case), []).append(view)
        else:
            without_read += 1
    readers = sorted({r.reader for r in reads} | {v.reader for v in views}, key=natural_key)
    rows = []
    for reader in readers:
        counts = dict.fromkeys(_COUNTS, 0)
        for (who, case), read in second.items():
            if who == reader:
                _count_case(counts, read, first.get((reader, case)), looked.get((reader, case), []))
        rows.append({"reader": reader, **_with_ratios(counts)})
    pooled = {name: sum(row[name] for row in rows) for name in _COUNTS}
    return {"readers": rows, "all_readers": _with_ratios(pooled), "views_without_task2_read": without_read,
            "note": SUMMARY_NOTE}


def _count_case(counts: dict[str, int], read: Read, task1: Read | None, views: list[NeighbourView]) -> None:
    counts["cases"] += 1
    changed = task1 is not None and task1.answer != read.answer
    counts["answer_changes"] += changed
    if read.seconds is None:
        counts["untimed_cases"] += 1
        counts["untimed_changes"] += changed
        return
    before = [v for v in views if v.seconds_after_shown < read.seconds]
    counts["enlargements"] += len(before)
    counts["enlargements_after_answer"] += len(views) - len(before)
    counts["cases_with_enlargement"] += bool(before)
    counts["changes_after_viewing_new_class"] += changed and any(v.neighbour_class == read.answer for v in before)


def _with_ratios(counts: dict[str, int]) -> dict:
    timed_cases = counts["cases"] - counts["untimed_cases"]
    timed_changes = counts["answer_changes"] - counts["untimed_changes"]
    return {**counts,
            "enlargements_per_case": counts["enlargements"] / timed_cases if timed_cases else None,
            "share_after_viewing_new_class":
                counts["changes_after_viewing_new_class"] / timed_changes if timed_changes else None}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
