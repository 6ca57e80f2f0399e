"""Reader-study writes: create and prepare a study, assign readers, open/close, save answers.

Preparation (the worker's part) freezes what readers will see: the curated query set from the
test split and each query's neighbours in the study's index, written in one transaction with a
conditional status change, so a redelivered or re-sent task duplicates nothing. Answers are
saved one at a time as they are given; the database allows one answer per reader, case and
task, and a second identical submission (a double click, a retry) returns the first. The
neighbour enlargements readers report in Task 2 are stored once per page-given id, so a batch
sent twice is harmless.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from lesionsearch.audit import services as audit
from lesionsearch.jobs import services as jobs
from lesionsearch.roles import READER, has_role
from readerstudy.models import (
    LIKERT_MAX, LIKERT_MIN, NEW_STUDY_DESIGNS, RELEVANCE_MAX, RELEVANCE_MIN, TASK_IMAGE_ONLY, TASK_WITH_NEIGHBOURS,
    Answer, AssignedCase, Assignment, Design, RelevanceRating, Study, StudyCase, StudyNeighbour, StudyPreparation,
)
from readerstudy.models import MAX_VIEWS_PER_CASE, MAX_VIEWS_PER_REQUEST, VIEW_ID_MAX_LENGTH, NeighbourView
# StudyError is shared with the selectors (callers may catch it as services.StudyError); the
# protocol's checks (is the task open, is the case reached) are selectors that writes check too.
from readerstudy.errors import StudyError
from readerstudy.selectors import check_reachable, check_task_open, study_report
from readerstudy.tasks import STUDY_PREPARATION
from retrieval.classes import CODES, TEST
from retrieval.models import Case, IndexVersion

logger = logging.getLogger(__name__)

Status = Study.Status
#: Neighbours searched beyond those shown, so that cases deleted since the index was built can be skipped.
SEARCH_MARGIN = 8
ENCODE_BATCH = 16
SHOWN_SALT = "readerstudy.shown"
#: A "shown" token older than this is not trusted for the time spent on a case.
SHOWN_MAX_AGE = timedelta(days=14)


# --- Creating and preparing -----------------------------------------------------------------

def study_create(*, user, name: str, index_version: IndexVersion | None = None, description: str = "",
                 cases_per_reader: int = 100, neighbours_shown: int = 6, washout: timedelta = timedelta(hours=24),
                 task2_rotation: int = 180, allow_changes: bool = False, relevance_ratings: bool = False,
                 reveal_results: bool = False, seed: int = 0, design: str = Design.CROSSED,
                 enqueue: bool = True) -> Study:
    """Create a study frozen on ``index_version`` (default: the index queries use now) and enqueue
    its preparation (``enqueue=False``: the caller runs ``study_prepare`` itself, as
    ``prepare_demo`` does). The study is a draft once its query set is curated.

    ``design``: ``crossed`` (every reader reads the same ``cases_per_reader`` cases) or ``nested``
    (each reader their own ``cases_per_reader`` cases, no case shared)."""
    from retrieval.selectors import index_for_queries

    name = (name or "").strip()
    if not name:
        raise StudyError("Give the study a name.")
    if Study.objects.filter(name=name).exists():
        raise StudyError(f"A study named {name!r} exists already.", 409, "exists")
    index = index_version or index_for_queries()
    if index is None or index.status != IndexVersion.Status.DONE:
        raise StudyError("There is no finished case-library index to freeze the study on; build one first.",
                         409, "no_index")
    if not 1 <= neighbours_shown <= 20:
        raise StudyError("Neighbours shown must be between 1 and 20.")
    if cases_per_reader < 1:
        raise StudyError("Cases per reader must be at least 1.")
    if washout < timedelta(0):
        raise StudyError("The washout cannot be negative.")
    if task2_rotation not in (0, 90, 180, 270):
        raise StudyError("The Task 2 rotation must be 0, 90, 180 or 270 degrees.")
    if design not in NEW_STUDY_DESIGNS:
        raise StudyError(f"The design must be one of {', '.join(NEW_STUDY_DESIGNS)} (not {design!r}).")
    with transaction.atomic():
        study = Study.objects.create(
            name=name, description=description, collection=index.collection, index_version=index, design=design,
            cases_per_reader=cases_per_reader, neighbours_shown=neighbours_shown, washout=washout,
            task2_rotation=task2_rotation, allow_changes=allow_changes, relevance_ratings=relevance_ratings,
            reveal_results=reveal_results, seed=seed, created_by=user if user and user.is_authenticated else None,
            message="Waiting for a worker to compute the query set and its neighbours.")
        audit.record(audit.Action.STUDY_CREATE, user=user, obj=study,
                     detail={"name": name, "index": index.id, "cases_per_reader": cases_per_reader,
                             "design": design})
        preparation = StudyPreparation.objects.create(study=study, message=study.message)
        if enqueue:
            jobs.enqueue_on_commit(STUDY_PREPARATION, preparation.id)
    return study


def study_refresh(*, study: Study) -> Study:
    """Re-send a preparation whose message or worker was lost, fail one that cannot be run
    (``lesionsearch.jobs.services.refresh``; checked on reads and by every worker's sweep)."""
    preparation = StudyPreparation.objects.filter(study=study).first()
    if study.status != Status.PREPARING or preparation is None:
        return study
    jobs.refresh(STUDY_PREPARATION, preparation)
    study.refresh_from_db()
    return study


def study_preparation_failed(*, preparation_id: int, message: str) -> None:
    """A failed preparation fails its study, with the same message (the job kind's ``on_fail``)."""
    Study.objects.filter(preparation__id=preparation_id, status=Status.PREPARING).update(
        status=Status.FAILED, message=message)


@dataclass(frozen=True)
class Candidate:
    case_id: int
    lesion_id: str
    neighbours: tuple[tuple[int, str, float], ...]  # (case id, lesion id, similarity), rank order


def curate(candidates: list[Candidate], *, shown: int) -> tuple[list[Candidate], dict]:
    """The thesis's query-set curation: one image per lesion (the first in the given order), then
    drop queries whose ``shown`` neighbours hold two or more images of one lesion. Returns the kept
    candidates and the counts at each step."""
    seen: set[str] = set()
    one_per_lesion = []
    for candidate in candidates:
        if candidate.lesion_id not in seen:
            seen.add(candidate.lesion_id)
            one_per_lesion.append(candidate)
    kept = []
    for candidate in one_per_lesion:
        lesions = Counter(lesion for _, lesion, _ in candidate.neighbours[:shown])
        if not lesions or max(lesions.values()) < 2:
            kept.append(candidate)
    counts = {"test_images": len(candidates), "one_per_lesion": len(one_per_lesion),
              "dropped_duplicate_lesion_neighbours": len(one_per_lesion) - len(kept), "query_set": len(kept)}
    return kept, counts


def study_prepare(*, study_id: int, worker: str = "") -> bool:
    """Prepare a study in this process (``prepare_demo``, tests): ``study_prepare_run`` of its
    preparation job."""
    preparation = StudyPreparation.objects.filter(study_id=study_id).first()
    if preparation is None:
        logger.info("study %s has no preparation; nothing to do", study_id)
        return False
    return study_prepare_run(preparation_id=preparation.id, worker=worker or "in-process")


def study_prepare_run(*, preparation_id: int, worker: str) -> bool:
    """The worker's part: encode the collection's test images as queries (saliency for the
    predicted class, as for a clinician's upload), search the frozen index, curate, and store the
    query set with its neighbours. Returns whether this call prepared the study."""
    preparation = jobs.claim(STUDY_PREPARATION, preparation_id, worker)
    if preparation is None:
        logger.info("study preparation %s is held, finished or out of attempts; nothing to do", preparation_id)
        return False
    study_id = preparation.study_id
    if not Study.objects.filter(id=study_id, status=Status.PREPARING).update(
            message=f"Computing the query set ({worker or 'worker'})."):
        jobs.fail(STUDY_PREPARATION, preparation_id, "The study is not waiting for its preparation.", worker=worker)
        return False
    study = Study.objects.select_related("index_version__model_version").get(id=study_id)
    try:
        candidates = _search_test_images(study, lambda done, total: _progress(preparation_id, worker, done, total))
        kept, counts = curate(candidates, shown=study.neighbours_shown)
        if not kept:
            raise StudyError(f"No test image of collection {study.collection!r} is left for the query set "
                             f"({counts['test_images']} test images, {counts['one_per_lesion']} lesions). "
                             "Split the library (split_library) so that it has a test split.")
    except Exception as exc:
        logger.exception("preparing study %s failed", study_id)
        message = str(exc) if isinstance(exc, StudyError) else f"Preparing the study failed ({type(exc).__name__}); see the worker log."
        jobs.fail(STUDY_PREPARATION, preparation_id, message, worker=worker)
        return True
    cases = Case.objects.in_bulk([c.case_id for c in kept] + [n for c in kept for n, _, _ in c.neighbours])
    from retrieval.ml.metrics import neighbour_vote

    with transaction.atomic():
        if not jobs.held(STUDY_PREPARATION, preparation_id, worker).select_for_update().exists() or \
                not Study.objects.select_for_update().filter(id=study_id, status=Status.PREPARING).exists():
            return False  # prepared by another run meanwhile
        for position, candidate in enumerate(kept, start=1):
            shown = candidate.neighbours[:study.neighbours_shown]
            study_case = StudyCase.objects.create(
                study_id=study_id, case_id=candidate.case_id, position=position,
                majority_vote=neighbour_vote([cases[n].dx for n, _, _ in shown]))
            StudyNeighbour.objects.bulk_create([
                StudyNeighbour(study_case=study_case, rank=rank, case_id=n, similarity=similarity)
                for rank, (n, _, similarity) in enumerate(shown, start=1)])
        message = (f"Query set: {counts['test_images']} test images -> {counts['one_per_lesion']} (one per lesion) "
                   f"-> {counts['query_set']} (without queries whose neighbours repeat a lesion).")
        Study.objects.filter(id=study_id).update(status=Status.DRAFT, curation=counts, prepared_at=timezone.now(),
                                                 message=message)
        jobs.finish(STUDY_PREPARATION, preparation_id, worker, message=message)
    logger.info("study %s prepared: %s", study_id, counts)
    return True


def _progress(preparation_id: int, worker: str, done: int, total: int) -> None:
    """The preparation's progress (and heartbeat), on the job and in the study's message (its
    dashboard shows it)."""
    message = f"Computing the query set: {done} of {total} test images searched."
    if jobs.progress(STUDY_PREPARATION, preparation_id, worker, done=done, total=total, message=message):
        Study.objects.filter(preparation__id=preparation_id, status=Status.PREPARING).update(message=message)


def _search_test_images(study: Study, progress=lambda done, total: None) -> list[Candidate]:
    from retrieval import runtime
    from retrieval.ml.data import load_resized
    from retrieval.ml.search import SearchFilter
    from retrieval.selectors import withdrawn_case_ids

    index = study.index_version
    if index.status != IndexVersion.Status.DONE:
        raise StudyError(f"The study's index #{index.id} is not finished ({index.status}).")
    # Cases withdrawn from the library are neither study images nor shown neighbours.
    tests = list(Case.objects.in_library().filter(collection=study.collection, split=TEST)
                 .order_by("image_id", "id").only("id", "image", "lesion_id"))
    if not tests:
        return []
    encoder = runtime.encoder_for(index.model_version)
    loaded = runtime.loaded_index(index)
    size = encoder.config.input_size
    depth = study.neighbours_shown + SEARCH_MARGIN
    withdrawn = SearchFilter().excluding_cases(withdrawn_case_ids(collection=index.collection))
    readable, found_ids, found_scores = [], [], []
    for start in range(0, len(tests), ENCODE_BATCH):
        batch, pixels = [], []
        for case in tests[start:start + ENCODE_BATCH]:
            try:
                pixels.append(load_resized(case.image.path, size))
            except (OSError, ValueError) as exc:
                logger.warning("study %s: test case %s left out, image unreadable: %s", study.id, case.id, exc)
                continue
            batch.append(case)
        if not batch:
            continue
        encoded = encoder.encode(np.stack(pixels))
        ids, scores = loaded.search(encoded.features, depth, where=withdrawn)
        readable += batch
        found_ids.append(ids)
        found_scores.append(scores)
        progress(len(readable), len(tests))
    ids = np.concatenate(found_ids)
    scores = np.concatenate(found_scores)
    lesion_of = dict(Case.objects.filter(id__in=np.unique(ids).tolist()).values_list("id", "lesion_id"))
    candidates = []
    for case, row_ids, row_scores in zip(readable, ids, scores):
        neighbours = tuple((int(i), lesion_of[int(i)], float(s)) for i, s in zip(row_ids, row_scores)
                           if int(i) in lesion_of)
        candidates.append(Candidate(case.id, case.lesion_id, neighbours[:study.neighbours_shown]))
    return candidates


# --- Readers, opening and closing --------------------------------------------------------------

def _orders(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    first = rng.permutation(n)
    second = rng.permutation(n)
    while n > 1 and np.array_equal(first, second):
        second = rng.permutation(n)
    return first, second


def reader_seed(study: Study, reader) -> int:
    """A reader's seed: fixed by the study's seed and the reader, so a sample can be re-derived."""
    return int(np.random.SeedSequence([study.seed, reader.id]).generate_state(1, np.uint64)[0] >> 1)


def study_assign(*, study: Study, readers, user=None) -> list[Assignment]:
    """Give each reader (users in the reader group) their cases of the query set by the study's
    design, in a seeded Task 1 order and a different seeded Task 2 order. Readers already assigned
    are kept.

    - ``crossed``: every reader gets the same seeded sample of ``cases_per_reader`` cases.
    - ``nested``: each new reader gets the next ``cases_per_reader`` cases of a seeded permutation
      that no assigned reader has; refused when the query set has too few left.
    - ``overlapping`` (studies from before designs): each reader an independent seeded sample.
    """
    if study.status not in (Status.DRAFT, Status.OPEN):
        raise StudyError(f"Readers can be assigned to a draft or open study, not a {study.get_status_display().lower()} one.",
                         409, "wrong_status")
    not_readers = [r.username for r in readers if not has_role(r, READER)]
    if not_readers:
        raise StudyError("Only users in the reader group can be assigned: " + ", ".join(sorted(not_readers)) + ".")
    cases = list(StudyCase.objects.filter(study=study).order_by("position").values_list("id", flat=True))
    created = []
    with transaction.atomic():
        taken = set(AssignedCase.objects.filter(assignment__study=study).values_list("study_case_id", flat=True))
        for reader in readers:
            if Assignment.objects.filter(study=study, reader=reader).exists():
                continue
            seed = reader_seed(study, reader)
            sample = _design_sample(study, cases, seed, taken, reader)
            n = len(sample)
            taken.update(sample)
            first, second = _orders(n, seed + 1)
            assignment = Assignment.objects.create(study=study, reader=reader, seed=seed)
            # first[i] is the sample member shown i-th in Task 1: invert the permutations into positions.
            pos1 = np.empty(n, int)
            pos1[first] = np.arange(1, n + 1)
            pos2 = np.empty(n, int)
            pos2[second] = np.arange(1, n + 1)
            AssignedCase.objects.bulk_create([
                AssignedCase(assignment=assignment, study_case_id=case_id, task1_position=int(pos1[j]),
                             task2_position=int(pos2[j]))
                for j, case_id in enumerate(sample)])
            created.append(assignment)
        if created:
            audit.record(audit.Action.STUDY_ASSIGN, user=user, obj=study,
                         detail={"readers": sorted(a.reader.get_username() for a in created)})
    return created


def _design_sample(study: Study, cases: list[int], seed: int, taken: set[int], reader) -> list[int]:
    """The study-case ids a new reader reads, in query-set order (see ``study_assign``)."""
    n = min(study.cases_per_reader, len(cases))
    if study.design == Design.OVERLAPPING:
        rng = np.random.default_rng(seed)
        return [cases[i] for i in sorted(rng.choice(len(cases), size=n, replace=False).tolist())]
    # One permutation of the query set per study, the same for every reader.
    permutation = np.random.default_rng(np.random.SeedSequence([study.seed, len(cases)])).permutation(len(cases))
    if study.design == Design.CROSSED:
        return [cases[i] for i in sorted(permutation[:n].tolist())]
    free = [i for i in permutation.tolist() if cases[i] not in taken]
    if len(free) < study.cases_per_reader:
        raise StudyError(
            f"Not enough cases left for {reader.username}: in a nested study each reader reads "
            f"{study.cases_per_reader} cases of their own; the query set has {len(cases)}, other readers have "
            f"{len(taken)}, leaving {len(free)}. Create the study with "
            "fewer cases per reader, or choose the fully crossed design.", 409, "not_enough_cases")
    return [cases[i] for i in sorted(free[:study.cases_per_reader])]


def study_unassign(*, study: Study, reader, user=None) -> None:
    """Remove a reader who has not answered anything (answers are never thrown away)."""
    assignment = Assignment.objects.filter(study=study, reader=reader).first()
    if assignment is None:
        raise StudyError(f"{reader.username} is not a reader of this study.", 404, "not_found")
    if Answer.objects.filter(item__assignment=assignment).exists():
        raise StudyError(f"{reader.username} has answered already; their answers are kept.", 409, "has_answers")
    with transaction.atomic():
        assignment.delete()
        audit.record(audit.Action.STUDY_UNASSIGN, user=user, obj=study, detail={"reader": reader.get_username()})


def study_open(*, study: Study, user=None) -> None:
    _study_move(study, user=user, source=Status.DRAFT, target=Status.OPEN, stamp="opened_at",
                action=audit.Action.STUDY_OPEN, refusal="Only a prepared draft study can be opened.")


def study_close(*, study: Study, user=None) -> None:
    """Close an open study: no more answers; its results (and, if the study says so, the readers'
    own results with the ground truth) become available. Closing is final."""
    _study_move(study, user=user, source=Status.OPEN, target=Status.CLOSED, stamp="closed_at",
                action=audit.Action.STUDY_CLOSE, refusal="Only an open study can be closed.")


def _study_move(study: Study, *, user, source: str, target: str, stamp: str, action: str, refusal: str) -> None:
    """Move the study from ``source`` to ``target`` status by a conditional update (409
    ``wrong_status`` with ``refusal`` when it is not in ``source``), noting when in ``stamp``."""
    with transaction.atomic():
        if not Study.objects.filter(id=study.id, status=source).update(status=target, **{stamp: timezone.now()}):
            raise StudyError(refusal, 409, "wrong_status")
        audit.record(action, user=user, obj=study)
    study.refresh_from_db()


# --- Reports ----------------------------------------------------------------------------------

def study_report_access(*, study: Study, user) -> dict:
    """The study's report (``selectors.study_report``) for ``user``, the access written to the audit
    log. StudyError 409 ``no_answers`` while nobody has answered."""
    report = study_report(study).report
    audit.record(audit.Action.STUDY_REPORT, user=user, obj=study)
    return report


def study_export(*, study: Study, user, formats: Sequence[str]) -> tuple[str, bytes]:
    """The report's files in one zip (``readerstudy.analysis.writers.report_archive``; ``formats``:
    names of ``writers.FORMATS``, checked by the caller), the export written to the audit log, for
    the dashboard's download and the API alike. Returns the archive's file name and its bytes;
    StudyError 409 ``no_answers`` while nobody has answered (nothing exported, no event)."""
    from readerstudy.analysis.writers import report_archive

    report = study_report(study)
    data = report_archive(report.report, report.reads, formats=formats, ratings=report.ratings, views=report.views)
    audit.record(audit.Action.STUDY_EXPORT, user=user, obj=study, detail={"formats": list(formats), "bytes": len(data)})
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    return f"study-{study.id}-report-{stamp}.zip", data


# --- Reading (the protocol's checks are selectors: check_task_open, check_reachable) ---------

def shown_token(assignment: Assignment, task: int, position: int) -> str:
    """A signed note of when a case was served, so the server can time the answer."""
    return signing.dumps([assignment.id, task, position, timezone.now().timestamp()], salt=SHOWN_SALT)


def _shown_at(token: str, assignment: Assignment, task: int, position: int) -> datetime | None:
    if not token:
        return None
    try:
        a, t, p, at = signing.loads(token, salt=SHOWN_SALT, max_age=SHOWN_MAX_AGE)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if (a, t, p) != (assignment.id, task, position):
        return None
    return datetime.fromtimestamp(at, tz=timezone.get_current_timezone())


def _as_int(value, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
        if str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise StudyError(f"{what} must be a whole number from {low} to {high}.") from None
    if not low <= number <= high:
        raise StudyError(f"{what} must be from {low} to {high}.")
    return number


def answer_submit(*, assignment: Assignment, task: int, position, answer: str, confidence,
                  ratings: dict | None = None, token: str = "") -> tuple[Answer, bool]:
    """Save a reader's answer for the case at ``position`` of their ``task`` order.

    Returns ``(answer, created)``. The same answer sent again returns the stored one with
    ``created`` False (a double click or a retry stores one row, also under concurrency); a
    different answer to a case already answered is refused unless the study allows changes.
    In relevance mode a Task 2 answer must rate every shown neighbour 0-3 (``ratings``: rank -> rating).
    """
    study = assignment.study
    check_task_open(assignment, task)
    if answer not in CODES:
        raise StudyError("Choose one of the seven classes.")
    confidence = _as_int(confidence, "The confidence", LIKERT_MIN, LIKERT_MAX)
    position = _as_int(position, "The case number", 1, assignment.items.count() or 1)
    field = "task1_position" if task == TASK_IMAGE_ONLY else "task2_position"
    item = AssignedCase.objects.filter(assignment=assignment, **{field: position}).first()
    if item is None:
        raise StudyError("There is no such case in your study.", 404, "not_found")
    check_reachable(assignment, task, position)
    rated = _checked_ratings(study, item, task, ratings)
    now = timezone.now()
    shown_at = _shown_at(token, assignment, task, position)
    seconds = max(0.0, (now - shown_at).total_seconds()) if shown_at else None
    try:
        with transaction.atomic():
            stored = Answer.objects.create(item=item, task=task, answer=answer, confidence=confidence,
                                           shown_at=shown_at, answered_at=now, seconds=seconds)
            _save_ratings(item, rated)
    except IntegrityError:
        stored = Answer.objects.filter(item=item, task=task).first()
        if stored is None:  # not the unique constraint after all
            raise
        same = stored.answer == answer and stored.confidence == confidence and (
            not rated or _stored_ratings(item) == rated)
        if same:
            return stored, False
        if not study.allow_changes:
            raise StudyError("This case has been answered already; answers are final in this study.",
                             409, "answer_final") from None
        with transaction.atomic():
            Answer.objects.filter(id=stored.id).update(answer=answer, confidence=confidence, answered_at=now,
                                                       changes=F("changes") + 1)
            _save_ratings(item, rated)
        stored.refresh_from_db()
        return stored, False
    _mark_finished(assignment, task, now)
    return stored, True


def _checked_ratings(study: Study, item: AssignedCase, task: int, ratings: dict | None) -> dict[int, int]:
    if not (study.relevance_ratings and task == TASK_WITH_NEIGHBOURS):
        if ratings:
            raise StudyError("Relevance ratings are only given in Task 2 of a study that asks for them.")
        return {}
    ranks = list(StudyNeighbour.objects.filter(study_case_id=item.study_case_id).values_list("rank", flat=True))
    ratings = {str(k): v for k, v in (ratings or {}).items()}
    missing = [r for r in ranks if str(r) not in ratings]
    if missing:
        raise StudyError("Rate the relevance of every similar case (missing: rank "
                         + ", ".join(map(str, missing)) + ").")
    unknown = sorted(set(ratings) - {str(r) for r in ranks})
    if unknown:
        raise StudyError("Ratings given for ranks that are not shown: " + ", ".join(unknown) + ".")
    return {r: _as_int(ratings[str(r)], f"The relevance of rank {r}", RELEVANCE_MIN, RELEVANCE_MAX) for r in ranks}


def _stored_ratings(item: AssignedCase) -> dict[int, int]:
    return dict(RelevanceRating.objects.filter(item=item).values_list("rank", "rating"))


def _save_ratings(item: AssignedCase, rated: dict[int, int]) -> None:
    for rank, rating in rated.items():
        RelevanceRating.objects.update_or_create(item=item, rank=rank, defaults={"rating": rating})


def _mark_finished(assignment: Assignment, task: int, now: datetime) -> None:
    field = "task1_finished_at" if task == TASK_IMAGE_ONLY else "task2_finished_at"
    total = AssignedCase.objects.filter(assignment=assignment).count()
    answered = Answer.objects.filter(item__assignment=assignment, task=task).count()
    if total and answered >= total:
        if Assignment.objects.filter(id=assignment.id, **{field + "__isnull": True}).update(**{field: now}):
            setattr(assignment, field, now)


# --- What readers looked at: enlargements of Task 2 neighbours --------------------------------

#: How far an enlargement's end (seconds after the showing plus seconds open) may lie past the
#: server's time since that showing: the page's clock starts after the server served the case, so
#: only rounding and clock drift can put it later; beyond this it would lie in the future.
VIEW_CLOCK_SLACK_SECONDS = 5.0
_VIEW_ID = re.compile(r"[A-Za-z0-9_-]{1,%d}" % VIEW_ID_MAX_LENGTH)
_VIEW_REQUIRED = ("id", "rank", "seconds_after_shown")
_VIEW_FIELDS = (*_VIEW_REQUIRED, "seconds_open")
#: Problems listed in one refusal (a batch of 200 broken events need not give 200 sentences).
_VIEW_PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class ViewsRecorded:
    """What ``neighbour_views_record`` did with one request."""

    stored: int  # enlargements stored now
    repeated: int  # enlargements of the request stored already (the same batch sent again)
    total: int  # the reader's enlargements stored for this case in all


@dataclass(frozen=True)
class _CheckedView:
    client_id: str
    rank: int
    seconds_after_shown: float
    seconds_open: float | None


def neighbour_views_record(*, assignment: Assignment, task: int, position, views, token: str = "") -> ViewsRecorded:
    """Store the neighbour enlargements that a reader's page (or API client) reports for the case
    at ``position`` of their Task 2 order.

    ``views`` is a list of at most ``MAX_VIEWS_PER_REQUEST`` objects ``{"id", "rank",
    "seconds_after_shown", "seconds_open"}``: ``id`` the client's own name for the enlargement
    (1-64 letters, digits, ``-`` or ``_``), ``rank`` a rank shown with the case, the seconds (from
    the case being shown to the enlargement, and how long it stayed open; the latter may be null
    or left out) from 0 to ``SHOWN_MAX_AGE``. Refused as a whole, nothing stored: Task 1 (404: it
    shows no neighbours), a task not open or a case not reached (``check_task_open``,
    ``check_reachable``), any malformed event (400, every problem listed), an id already stored
    for the case with other values (409 ``view_conflict``), more than ``MAX_VIEWS_PER_CASE`` for
    the case (409 ``view_limit``).

    Idempotent by id: an event whose id is stored already for this case is not stored again, so a
    batch sent twice (a retry, the page-hide beacon after a fetch) stores each enlargement once.
    With the case's valid ``shown`` token the enlargements are also placed on the server's clock
    (``shown_at``, ``opened_at``), and one that would end after now is refused; without it
    (``shown`` missing, forged, or another case's) they are stored with null server times, as an
    answer without a token is stored without ``seconds``.

    Enlargements of an answered case are accepted: the page's last batch may reach the server
    after the answer it preceded (both are sent as the reader saves), and where answers may be
    changed a revisit informs the change. The analysis places each one before or after the answer.
    """
    if task != TASK_WITH_NEIGHBOURS:
        raise StudyError(f"Only Task {TASK_WITH_NEIGHBOURS} shows similar cases to enlarge.", 404, "not_found")
    check_task_open(assignment, task)
    if isinstance(position, bool) or not isinstance(position, (int, str)) or not str(position).strip().isdigit():
        raise StudyError("The case number must be a whole number.")
    position = int(position)
    check_reachable(assignment, task, position)  # 404 no such case, 403 not reached
    item = AssignedCase.objects.get(assignment=assignment, task2_position=position)
    ranks = sorted(StudyNeighbour.objects.filter(study_case_id=item.study_case_id).values_list("rank", flat=True))
    now = timezone.now()
    shown_at = _shown_at(token, assignment, task, position) if isinstance(token, str) else None
    checked = _checked_views(views, ranks, None if shown_at is None else (now - shown_at).total_seconds())
    try:
        with transaction.atomic():
            return _store_views(item, checked, shown_at, now)
    except IntegrityError:
        # The same batch stored by a concurrent request (the beacon and the fetch at once): once
        # more, its events are found stored and not stored again.
        with transaction.atomic():
            return _store_views(item, checked, shown_at, now)


def _checked_views(views, ranks: list[int], since_shown: float | None) -> list[_CheckedView]:
    if not isinstance(views, list):
        raise StudyError("`views` must be a list of enlargements.")
    if len(views) > MAX_VIEWS_PER_REQUEST:
        raise StudyError(f"At most {MAX_VIEWS_PER_REQUEST} enlargements can be sent at once ({len(views)} were).")
    limit = SHOWN_MAX_AGE.total_seconds()
    problems: list[str] = []
    checked: list[_CheckedView] = []
    first_of: dict[str, int] = {}
    shown_ranks = ", ".join(map(str, ranks))
    for number, view in enumerate(views, start=1):
        where = f"view {number}"
        if not isinstance(view, dict):
            problems.append(f"{where} is not an object with {', '.join(_VIEW_REQUIRED)}")
            continue
        before = len(problems)
        missing = [name for name in _VIEW_REQUIRED if name not in view]
        unknown = sorted(str(name) for name in view if name not in _VIEW_FIELDS)
        if missing:
            problems.append(f"{where} lacks {', '.join(missing)}")
        if unknown:
            problems.append(f"{where} has unknown field(s) {', '.join(unknown)} (allowed: {', '.join(_VIEW_FIELDS)})")
        client_id, rank = view.get("id"), view.get("rank")
        if "id" in view:
            if not isinstance(client_id, str) or not _VIEW_ID.fullmatch(client_id):
                problems.append(f"{where}: id must be 1 to {VIEW_ID_MAX_LENGTH} letters, digits, - or _")
            elif client_id in first_of:
                problems.append(f"{where}: id {client_id!r} is view {first_of[client_id]}'s already")
            else:
                first_of[client_id] = number
        if "rank" in view and (not _whole(rank) or rank not in ranks):
            problems.append(f"{where}: rank {rank!r} is not a rank shown with this case ({shown_ranks})")
        after = _view_seconds(view, "seconds_after_shown", where, limit, problems)
        open_for = _view_seconds(view, "seconds_open", where, limit, problems, nullable=True)
        if after is not None and since_shown is not None \
                and after + (open_for or 0.0) > since_shown + VIEW_CLOCK_SLACK_SECONDS:
            problems.append(f"{where} would end {after + (open_for or 0.0):.1f} s after the case was shown, "
                            f"but it was shown {max(since_shown, 0.0):.1f} s ago")
        if len(problems) == before:
            checked.append(_CheckedView(client_id, rank, after, open_for))
    if problems:
        more = len(problems) - _VIEW_PROBLEMS_SHOWN
        raise StudyError("Nothing was stored: " + "; ".join(problems[:_VIEW_PROBLEMS_SHOWN])
                         + (f"; and {more} more problem(s)" if more > 0 else "") + ".")
    return checked


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _view_seconds(view: dict, name: str, where: str, limit: float, problems: list[str],
                  nullable: bool = False) -> float | None:
    value = view.get(name)
    if value is None:
        if name in view and not nullable:
            problems.append(f"{where}: {name} must be a number of seconds, not null")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= limit:
        problems.append(f"{where}: {name} {value!r} is not a number of seconds from 0 to {limit:.0f}")
        return None
    return float(value)


def _store_views(item: AssignedCase, views: list[_CheckedView], shown_at: datetime | None,
                 now: datetime) -> ViewsRecorded:
    stored = {view.client_id: view for view in
              NeighbourView.objects.filter(item=item, client_id__in=[v.client_id for v in views])}
    conflicts = [v.client_id for v in views if v.client_id in stored and (
        stored[v.client_id].rank, stored[v.client_id].seconds_after_shown, stored[v.client_id].seconds_open)
        != (v.rank, v.seconds_after_shown, v.seconds_open)]
    if conflicts:
        raise StudyError("Stored already with other values (an id names one enlargement): "
                         + ", ".join(conflicts[:_VIEW_PROBLEMS_SHOWN]) + ". Nothing was stored.", 409, "view_conflict")
    new = [v for v in views if v.client_id not in stored]
    total = NeighbourView.objects.filter(item=item).count()
    if total + len(new) > MAX_VIEWS_PER_CASE:
        raise StudyError(f"At most {MAX_VIEWS_PER_CASE} enlargements are stored per case ({total} are); "
                         "nothing was stored.", 409, "view_limit")
    NeighbourView.objects.bulk_create([
        NeighbourView(item=item, task=TASK_WITH_NEIGHBOURS, rank=v.rank, client_id=v.client_id,
                      seconds_after_shown=v.seconds_after_shown, seconds_open=v.seconds_open, shown_at=shown_at,
                      opened_at=None if shown_at is None else shown_at + timedelta(seconds=v.seconds_after_shown),
                      received_at=now)
        for v in new])
    return ViewsRecorded(stored=len(new), repeated=len(views) - len(new), total=total + len(new))
