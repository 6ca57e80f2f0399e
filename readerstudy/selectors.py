"""Reader-study reads.

Reader-facing selectors (``reader_*``, ``task_progress``) never return a study case's ground
truth, its case or image id, or its neighbour vote: only opaque positions in the reader's own
order, the neighbours' classes (library cases, shown by the protocol) and the reader's own
answers. Staff selectors (``study_*``) return everything, for dashboards and exports.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.db.models import Count, Q
from django.utils import timezone

from lesionsearch.roles import STUDY_ADMIN, has_role
from readerstudy.models import (
    TASK_IMAGE_ONLY, TASK_WITH_NEIGHBOURS, TASKS, Answer, AssignedCase, Assignment, RelevanceRating, Study,
    StudyNeighbour,
)
from readerstudy.services import StudyError, check_task_open, task_opens_at
from retrieval.classes import BY_CODE

#: Studies a reader can see (a draft or one still being prepared is invisible to readers).
READER_VISIBLE = (Study.Status.OPEN, Study.Status.CLOSED)


def is_study_admin(user) -> bool:
    return bool(user.is_authenticated and user.is_active and (user.is_staff or has_role(user, STUDY_ADMIN)))


def _position_field(task: int) -> str:
    return "task1_position" if task == TASK_IMAGE_ONLY else "task2_position"


# --- Reader side ------------------------------------------------------------------------------

def reader_assignments(*, user) -> list[Assignment]:
    return list(Assignment.objects.filter(reader=user, study__status__in=READER_VISIBLE)
                .select_related("study").order_by("-study__created_at"))


def reader_assignment(*, user, study_id: int) -> Assignment:
    """The user's assignment in a study visible to readers (DoesNotExist otherwise)."""
    return Assignment.objects.select_related("study").get(reader=user, study_id=study_id,
                                                          study__status__in=READER_VISIBLE)


@dataclass(frozen=True)
class TaskProgress:
    task: int
    total: int
    answered: int
    next_position: int | None  # first unanswered position in this task's order; None when all answered
    finished_at: datetime | None
    opens_at: datetime | None  # None: Task 2 before Task 1 is finished
    is_open: bool
    reason: str  # why it is not open ("" when open)

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.answered >= self.total


def task_progress(assignment: Assignment, task: int, now: datetime | None = None) -> TaskProgress:
    field = _position_field(task)
    items = AssignedCase.objects.filter(assignment=assignment)
    total = items.count()
    answered_positions = set(items.filter(answers__task=task).values_list(field, flat=True))
    next_position = next((p for p in range(1, total + 1) if p not in answered_positions), None)
    try:
        check_task_open(assignment, task, now)
        is_open, reason = True, ""
    except StudyError as exc:
        is_open, reason = False, str(exc)
    return TaskProgress(task, total, len(answered_positions), next_position,
                        assignment.task1_finished_at if task == TASK_IMAGE_ONLY else assignment.task2_finished_at,
                        task_opens_at(assignment, task), is_open, reason)


def reader_item(assignment: Assignment, task: int, position: int) -> AssignedCase:
    return AssignedCase.objects.select_related("study_case__case").get(
        assignment=assignment, **{_position_field(task): position})


def reader_case(assignment: Assignment, task: int, position: int) -> dict:
    """What the reader's page (or API) shows for one case: opaque position, the neighbours in
    Task 2 (rank and class only), and the reader's own answer if given. No ground truth."""
    item = reader_item(assignment, task, position)
    own = Answer.objects.filter(item=item, task=task).first()
    case = {
        "task": task,
        "position": position,
        "total": AssignedCase.objects.filter(assignment=assignment).count(),
        "rotation": assignment.study.task2_rotation if task == TASK_WITH_NEIGHBOURS else 0,
        "neighbours": [],
        "answer": ({"answer": own.answer, "confidence": own.confidence} if own else None),
        "ratings": {},
    }
    if task == TASK_WITH_NEIGHBOURS:
        for neighbour in StudyNeighbour.objects.filter(study_case_id=item.study_case_id).select_related("case"):
            cls = BY_CODE[neighbour.case.dx]
            case["neighbours"].append({"rank": neighbour.rank, "code": cls.code, "label": cls.label,
                                       "colour": cls.colour, "group": cls.group})
        case["ratings"] = {str(r): v for r, v in RelevanceRating.objects.filter(item=item).values_list("rank", "rating")}
    return case


def reader_neighbour(assignment: Assignment, position: int, rank: int) -> StudyNeighbour:
    item = reader_item(assignment, TASK_WITH_NEIGHBOURS, position)
    return StudyNeighbour.objects.select_related("case").get(study_case_id=item.study_case_id, rank=rank)


def reader_results(assignment: Assignment) -> list[dict]:
    """The reader's own answers with the ground truth: only for a closed study that reveals results."""
    study = assignment.study
    if not (study.status == Study.Status.CLOSED and study.reveal_results):
        raise StudyError("Results are shown once the study is closed, if the study administrator allows it.",
                         403, "results_hidden")
    rows = []
    for item in (AssignedCase.objects.filter(assignment=assignment).select_related("study_case__case")
                 .prefetch_related("answers").order_by("task1_position")):
        answers = {a.task: a for a in item.answers.all()}
        truth = BY_CODE[item.study_case.case.dx]
        rows.append({"position": item.task1_position, "truth": truth,
                     "answers": {task: answers.get(task) for task in TASKS}})
    return rows


# --- Staff side -------------------------------------------------------------------------------

def study_list() -> list[Study]:
    return list(Study.objects.select_related("index_version").annotate(
        n_readers=Count("assignments", distinct=True), n_cases=Count("cases", distinct=True)))


def study_progress(study: Study, now: datetime | None = None) -> list[dict]:
    """One row per reader: answered / total per task, when each finished and when Task 2 opens."""
    now = now or timezone.now()
    rows = []
    assignments = (Assignment.objects.filter(study=study).select_related("reader", "study")
                   .annotate(total=Count("items", distinct=True),
                             task1=Count("items__answers", filter=Q(items__answers__task=1), distinct=True),
                             task2=Count("items__answers", filter=Q(items__answers__task=2), distinct=True)))
    for a in assignments:
        opens = task_opens_at(a, TASK_WITH_NEIGHBOURS)
        rows.append({"reader": a.reader.username, "total": a.total, "task1": a.task1, "task2": a.task2,
                     "task1_finished_at": a.task1_finished_at, "task2_finished_at": a.task2_finished_at,
                     "task2_opens_at": opens, "task2_waiting": bool(opens and opens > now)})
    return rows


def study_reads(study: Study) -> tuple[list, list]:
    """Every answer of the study as analysis rows (``readerstudy.analysis.reads.Read``; reader =
    username, case = image id) with the neighbours' majority vote, and the relevance ratings."""
    from readerstudy.analysis.reads import Read, RelevanceRating as RatingRow

    reads = [
        Read(reader=a.item.assignment.reader.username, case=a.item.study_case.case.image_id,
             truth=a.item.study_case.case.dx, task=a.task, answer=a.answer, confidence=a.confidence,
             majority_vote=a.item.study_case.majority_vote, seconds=a.seconds)
        for a in Answer.objects.filter(item__assignment__study=study)
        .select_related("item__assignment__reader", "item__study_case__case")
        .order_by("item__assignment__reader__username", "task", "item__task1_position")
    ]
    ratings = [
        RatingRow(reader=r.item.assignment.reader.username, case=r.item.study_case.case.image_id,
                  method=study.method, rank=r.rank, rating=r.rating)
        for r in RelevanceRating.objects.filter(item__assignment__study=study)
        .select_related("item__assignment__reader", "item__study_case__case")
        .order_by("item__assignment__reader__username", "item__task1_position", "rank")
    ]
    return reads, ratings


class StudyReport(NamedTuple):
    """A study's report and the rows it was computed from (what the export writes beside it)."""

    report: dict
    reads: list
    ratings: list
    views: list


def study_report(study: Study) -> StudyReport:
    """The study's report (``readerstudy.analysis.report.build_report``), the same as
    ``readerstudy_report`` computes from a responses file (and a views file)."""
    from readerstudy.analysis.report import build_report
    from readerstudy.viewing import study_views

    reads, ratings = study_reads(study)
    if not reads:
        raise StudyError("No answers yet: there is nothing to report.", 409, "no_answers")
    views = study_views(study)
    return StudyReport(build_report(reads, ratings=ratings, design=study.design, views=views), reads, ratings, views)
