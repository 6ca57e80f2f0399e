"""Reader-study reads.

Reader-facing selectors (``reader_*``, ``task_progress``) never return a study case's ground
truth, its case or image id, or its neighbour vote: only opaque positions in the reader's own
order, the neighbours' classes (library cases, shown by the protocol) and the reader's own
answers. Staff selectors (``study_*``) return everything, for dashboards and exports.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from PIL import Image, ImageOps

from lesionsearch.roles import READER, STUDY_ADMIN, has_role
from readerstudy.errors import StudyError
from readerstudy.models import (
    TASK_IMAGE_ONLY, TASK_WITH_NEIGHBOURS, TASKS, Answer, AssignedCase, Assignment, RelevanceRating, Study,
    StudyNeighbour,
)
from retrieval.classes import BY_CODE
from retrieval.selectors import case_credit

#: Studies a reader can see (a draft or one still being prepared is invisible to readers).
READER_VISIBLE = (Study.Status.OPEN, Study.Status.CLOSED)


def is_study_admin(user) -> bool:
    return bool(user.is_authenticated and user.is_active and (user.is_staff or has_role(user, STUDY_ADMIN)))


#: Study images reach readers re-encoded: at most this many pixels a side, as JPEG of this quality.
IMAGE_MAX_SIDE = 1024
IMAGE_QUALITY = 92


def _position_field(task: int) -> str:
    return "task1_position" if task == TASK_IMAGE_ONLY else "task2_position"


# --- The protocol's rules: what a reader may read now (services check them before writing too) --

def task_opens_at(assignment: Assignment, task: int) -> datetime | None:
    """When ``task`` opens for the reader: Task 1 at once, Task 2 a washout after they finished Task 1
    (None while Task 1 is unfinished)."""
    if task == TASK_IMAGE_ONLY:
        return assignment.created_at
    if assignment.task1_finished_at is None:
        return None
    return assignment.task1_finished_at + assignment.study.washout


def check_task_open(assignment: Assignment, task: int, now: datetime | None = None) -> None:
    """Raise StudyError unless the reader may read cases of ``task`` now (server-side washout)."""
    now = now or timezone.now()
    if task not in TASKS:
        raise StudyError("The task must be 1 or 2.", 404, "not_found")
    if assignment.study.status != Study.Status.OPEN:
        raise StudyError("This study is not open for reading.", 403, "study_not_open")
    if task == TASK_WITH_NEIGHBOURS:
        opens = task_opens_at(assignment, task)
        if opens is None:
            raise StudyError("Task 2 opens after you have finished Task 1 and the washout has passed.",
                             403, "task2_not_open")
        if now < opens:
            raise StudyError(f"Task 2 opens at {timezone.localtime(opens):%Y-%m-%d %H:%M} (washout after Task 1).",
                             403, "washout")


def _answered(assignment: Assignment, task: int) -> tuple[set[int], int]:
    """The answered positions of the reader's ``task`` order, and how many cases the order has."""
    items = AssignedCase.objects.filter(assignment=assignment)
    return set(items.filter(answers__task=task).values_list(_position_field(task), flat=True)), items.count()


def first_unanswered(assignment: Assignment, task: int) -> int | None:
    """The first position of the reader's ``task`` order without an answer (None: all answered)."""
    return _first_missing(*_answered(assignment, task))


def _first_missing(answered: set[int], total: int) -> int | None:
    return next((p for p in range(1, total + 1) if p not in answered), None)


def check_reachable(assignment: Assignment, task: int, position: int) -> None:
    """Raise StudyError unless the case at ``position`` may be served or answered: an answered case
    may be revisited, but nothing after the first unanswered one (the order is part of the protocol),
    in any view, image or API call."""
    total = AssignedCase.objects.filter(assignment=assignment).count()
    if not 1 <= position <= total:
        raise StudyError(f"Task {task} has no case {position} (it has {total}).", 404, "not_found")
    next_position = first_unanswered(assignment, task)
    if next_position is not None and position > next_position:
        raise StudyError(f"Case {position} is not reached yet: the cases are read in order, and your "
                         f"next case is {next_position}.", 403, "not_reached")


def task_rotation(assignment: Assignment, task: int) -> int:
    """Degrees (counter-clockwise) the case images of ``task`` are rotated by: the study's Task 2
    rotation in Task 2, none in Task 1."""
    return assignment.study.task2_rotation if task == TASK_WITH_NEIGHBOURS else 0


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
    answered_positions, total = _answered(assignment, task)
    next_position = _first_missing(answered_positions, total)
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
    Task 2 (rank and class only), and the reader's own answer if given. No ground truth. Each
    library image comes with its credit line (``case_credit``: the ISIC terms ask for it wherever
    the image is shown)."""
    item = reader_item(assignment, task, position)
    own = Answer.objects.filter(item=item, task=task).first()
    case = {
        "task": task,
        "position": position,
        "total": AssignedCase.objects.filter(assignment=assignment).count(),
        "rotation": task_rotation(assignment, task),
        "neighbours": [],
        "answer": ({"answer": own.answer, "confidence": own.confidence} if own else None),
        "ratings": {},
        **case_credit(item.study_case.case),
    }
    if task == TASK_WITH_NEIGHBOURS:
        for neighbour in StudyNeighbour.objects.filter(study_case_id=item.study_case_id).select_related("case"):
            cls = BY_CODE[neighbour.case.dx]
            case["neighbours"].append({"rank": neighbour.rank, "code": cls.code, "label": cls.label,
                                       "colour": cls.colour, "group": cls.group, **case_credit(neighbour.case)})
        case["ratings"] = {str(r): v for r, v in RelevanceRating.objects.filter(item=item).values_list("rank", "rating")}
    return case


def reader_neighbour(assignment: Assignment, position: int, rank: int) -> StudyNeighbour:
    item = reader_item(assignment, TASK_WITH_NEIGHBOURS, position)
    return StudyNeighbour.objects.select_related("case").get(study_case_id=item.study_case_id, rank=rank)


def reader_case_image(*, assignment: Assignment, task: int, position: int) -> bytes:
    """The image of the case at ``position`` of the reader's ``task`` order as the reader sees it
    (``study_image``, with the task's rotation). StudyError unless the task is open now and the case
    is reached (404 for a case or task that does not exist)."""
    check_task_open(assignment, task)
    check_reachable(assignment, task, position)
    try:
        item = reader_item(assignment, task, position)
    except AssignedCase.DoesNotExist:
        raise StudyError("no such case", 404, "not_found") from None
    return study_image(path=item.study_case.case.image.path, rotation=task_rotation(assignment, task))


def reader_neighbour_image(*, assignment: Assignment, position: int, rank: int) -> bytes:
    """The image of the neighbour of ``rank`` shown with the Task 2 case at ``position``, unrotated
    (``study_image``); StudyError as ``reader_case_image``."""
    check_task_open(assignment, TASK_WITH_NEIGHBOURS)
    check_reachable(assignment, TASK_WITH_NEIGHBOURS, position)
    try:
        neighbour = reader_neighbour(assignment, position, rank)
    except (AssignedCase.DoesNotExist, StudyNeighbour.DoesNotExist):
        raise StudyError("no such case", 404, "not_found") from None
    return study_image(path=neighbour.case.image.path, rotation=0)


def study_image(*, path: str, rotation: int = 0) -> bytes:
    """A study image as readers get it, for the reading pages and the API alike: re-encoded as JPEG
    without metadata (no file names, EXIF or ids reach the reader), upright, rotated
    counter-clockwise by ``rotation`` degrees, at most ``IMAGE_MAX_SIDE`` pixels a side."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
        if rotation:
            image = image.rotate(rotation, expand=True)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=IMAGE_QUALITY)
    return buffer.getvalue()


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


def study_get(*, study_id: int) -> Study:
    """A study with its index, for study administrators (``Study.DoesNotExist`` when there is none)."""
    return Study.objects.select_related("index_version").get(id=study_id)


def study_by_name(*, name: str) -> Study | None:
    return Study.objects.filter(name=name).first()


def readers_by_username(*, usernames) -> list:
    """The users of these names who are in the reader group."""
    return list(get_user_model().objects.filter(groups__name=READER, username__in=list(usernames)))


def study_readers(*, study: Study) -> list[str]:
    """The user names of the study's readers, in order."""
    return list(study.assignments.order_by("reader__username").values_list("reader__username", flat=True))


def study_detail(*, study: Study) -> dict:
    """A study with the size of its query set and its readers (the administrators' view of one study)."""
    return {"study": study, "cases_count": study.cases.count(), "readers": study_readers(study=study)}


def study_reader_candidates(*, study: Study) -> QuerySet:
    """Active users in the reader group who are not readers of the study yet, by user name."""
    assigned = set(study.assignments.values_list("reader_id", flat=True))
    return (get_user_model().objects.filter(groups__name=READER, is_active=True)
            .exclude(id__in=assigned).order_by("username"))


def users_by_id(*, ids) -> list:
    """The users with these ids (whom an administrator picked to assign; ``study_assign`` checks
    that they are readers)."""
    return list(get_user_model().objects.filter(id__in=ids))


def study_has_answers(*, study: Study) -> bool:
    return study.assignments.filter(items__answers__isnull=False).exists()


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
