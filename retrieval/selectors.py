"""Reads: the case library, queries, model versions and the index. Selectors never write.

A page or API read of an unfinished query or index build first calls the refresh service
(``retrieval.services.queries.query_refresh``, ``retrieval.services.polling``), which notices a
lost job and re-sends or fails it; then it reads here.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models import Count, Exists, Max, OuterRef, Q, QuerySet, Subquery

from lesionsearch.roles import CLINICIAN, STUDY_ADMIN, has_role, roles_of
from retrieval.classes import BY_CODE, CLASSES, SPLIT_CHOICES, TEST
from retrieval.models import (Case, IndexVersion, LibraryCheck, ModelVersion, Query, QueryEvidence, QueryNeighbour,
                              TrainingJob)

if TYPE_CHECKING:
    from retrieval.report import QueryReport

#: How many of the newest index builds the index status lists.
RECENT_BUILDS = 10


# --- Who may do what (roles are groups: lesionsearch.roles; active staff may do everything) ---

def user_is_staff(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def user_may_query(user) -> bool:
    """Clinicians (and staff) search the case library with their own images."""
    return user_is_staff(user) or has_role(user, CLINICIAN)


def user_may_browse_cases(user) -> bool:
    """Clinicians, study administrators and staff may list library cases with their diagnoses;
    readers may not: the library holds the reader-study images, whose diagnoses they must not learn."""
    return user_is_staff(user) or has_role(user, CLINICIAN) or has_role(user, STUDY_ADMIN)


def user_has_any_role(user) -> bool:
    return user_is_staff(user) or bool(roles_of(user))


# --- The case library ---------------------------------------------------------------------

def collections_list() -> list[str]:
    return list(Case.objects.order_by("collection").values_list("collection", flat=True).distinct())


def default_collection() -> str:
    """The library's only collection; ValueError when there is none or several to choose from."""
    collections = collections_list()
    if len(collections) == 1:
        return collections[0]
    if not collections:
        raise ValueError("the library is empty; import cases first")
    raise ValueError(f"several collections ({', '.join(collections)}); choose one with --collection")


def library_state() -> str:
    """A token that changes whenever a case is added, changed (``updated_at``; withdrawal and
    restoration included) or deleted, in any collection and any process: the key under which
    the case library page's class table and example images are cached. Three small reads (a
    count and two indexed maximums) instead of the page's grouping and window queries: a
    deletion lowers the count, an addition raises the highest id (never reused), any other
    write raises the latest ``updated_at``."""
    count = Case.objects.count()
    last_id = Case.objects.aggregate(v=Max("id"))["v"]
    last_write = Case.objects.aggregate(v=Max("updated_at"))["v"]
    return f"{count}-{last_id}-{last_write.timestamp() if last_write else 0:.6f}"


def library_summary(*, collection: str) -> dict:
    """Images per class and split, lesion count and totals for one collection's cases in the
    library (``withdrawn``: how many more were withdrawn from it)."""
    cases = Case.objects.in_library().filter(collection=collection)
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in cases.values("dx", "split").annotate(n=Count("id")):
        table[row["dx"]][row["split"]] = row["n"]
    splits = [code for code, _ in SPLIT_CHOICES]
    rows = []
    for cls in CLASSES:
        per_split = [table[cls.code][s] for s in splits]
        rows.append({"cls": cls, "per_split": per_split, "total": sum(per_split)})
    split_totals = [sum(r["per_split"][i] for r in rows) for i in range(len(splits))]
    return {
        "collection": collection,
        "rows": rows,
        "splits": SPLIT_CHOICES,
        "split_totals": split_totals,
        "total": sum(split_totals),
        "lesions": cases.values("lesion_id").distinct().count(),
        "withdrawn": Case.objects.withdrawn().filter(collection=collection).count(),
    }


def case_examples(*, collection: str, per_class: int = 4) -> dict[str, list[Case]]:
    """A few library images per class, never from the test split: test images are the held-out
    queries of reader studies, and a reader must not see one of them with its diagnosis."""
    from django.db.models import F, Window
    from django.db.models.functions import RowNumber

    ranked = (Case.objects.in_library().filter(collection=collection).exclude(split=TEST)
              .annotate(rank=Window(RowNumber(), partition_by=[F("dx")], order_by=F("image_id").asc()))
              .filter(rank__lte=per_class).order_by("dx", "image_id"))  # one query, not one per class
    examples: dict[str, list[Case]] = {cls.code: [] for cls in CLASSES}
    for case in ranked:
        examples.setdefault(case.dx, []).append(case)
    return examples


def library_check_latest(*, collection: str) -> LibraryCheck | None:
    return LibraryCheck.objects.filter(collection=collection).first()


def case_list(*, diagnosis: str | None = None, split: str | None = None,
              collection: str | None = None, withdrawn: bool | None = None) -> QuerySet[Case]:
    """Library cases by collection and image id, narrowed by the filters given (the API's
    validated ``CaseFilterSerializer`` values; ``withdrawn`` True/False: only the withdrawn
    cases / only those in the library). Who may list them is the API's permission (readers may
    not: ``MayBrowseCases``)."""
    return _narrowed(Case.objects.order_by("collection", "image_id", "pk"), dx=diagnosis, split=split,
                     collection=collection, withdrawn_at__isnull=None if withdrawn is None else not withdrawn)


def _narrowed(rows: QuerySet, **lookups) -> QuerySet:
    """``rows`` filtered by every lookup whose value is given (a None value: not filtered by it)."""
    return rows.filter(**{lookup: value for lookup, value in lookups.items() if value is not None})


def case_get(*, case_id: int) -> Case:
    """One library case (``Case.DoesNotExist`` when there is none)."""
    return Case.objects.get(pk=case_id)


def case_indexable_count(*, collection: str) -> int:
    """How many cases of the collection an index holds: all but the test split (held-out queries)
    and the cases withdrawn from the library."""
    return Case.objects.in_library().filter(collection=collection).exclude(split=TEST).count()


def withdrawn_case_ids(*, collection: str) -> list[int]:
    """The ids of the collection's cases withdrawn from the library, which no search may return
    (read on every query: a withdrawal takes effect on the next search in every process)."""
    return list(Case.objects.withdrawn().filter(collection=collection).values_list("id", flat=True))


def cases_by_image_id(*, collection: str, image_ids) -> dict[str, Case]:
    """Image id -> case, for the collection's cases with these image ids (withdrawn ones too)."""
    return {case.image_id: case for case in Case.objects.filter(collection=collection, image_id__in=list(image_ids))}


def case_keys(*, collection: str, image_ids) -> dict[str, str]:
    """Image id -> content hash (the training items' key) of the collection's cases with these image ids."""
    return dict(Case.objects.filter(collection=collection, image_id__in=list(image_ids))
                .values_list("image_id", "sha256"))


# --- Model versions -----------------------------------------------------------------------

def model_version_get(*, version_id: int, stage: str | None = None, config: str | None = None,
                      collection: str | None = None) -> ModelVersion | None:
    """The model version with this id, if it is of the stage, config and collection given; else None."""
    versions = model_version_list(stage=stage, config=config, collection=collection)
    return versions.filter(id=version_id).first()


def model_version_list(*, stage: str | None = None, config: str | None = None,
                       collection: str | None = None) -> QuerySet[ModelVersion]:
    """Model versions, newest first, of the stage, config and collection given."""
    return _narrowed(ModelVersion.objects.select_related("parent").order_by("-created_at", "-id"),
                     stage=stage, config=config, collection=collection)


def model_version_newest(*, stage: str, config: str | None = None, collection: str | None = None) -> ModelVersion | None:
    """The newest model version of the stage (and config and collection, when given); None when none."""
    return model_version_list(stage=stage, config=config, collection=collection).first()


def training_job_unfinished(*, stage: str, collection: str) -> TrainingJob | None:
    """The oldest pending or running training job of this stage and collection, or None."""
    return (TrainingJob.objects.filter(stage=stage, collection=collection, status__in=["pending", "running"])
            .order_by("created_at").first())


def training_job_get(*, job_id: int) -> TrainingJob | None:
    """The training job with this id, or None."""
    return TrainingJob.objects.filter(id=job_id).first()


# --- Queries ------------------------------------------------------------------------------

def query_list(*, user) -> QuerySet[Query]:
    """The user's own queries, newest first."""
    return Query.objects.filter(user=user).select_related("index_version").order_by("-created_at", "-id")


def query_get(*, user, query_id: int) -> Query:
    """The user's query; ``Query.DoesNotExist`` when there is none or it is someone else's."""
    return query_list(user=user).get(id=query_id)


#: Media folders whose files belong to one user's query (uploads, saliency overlays, evidence maps).
PRIVATE_QUERY_PREFIXES = ("queries/",)


def media_file_visible(*, user, name: str) -> bool:
    """Whether the signed-in ``user`` may fetch the media file ``name`` (relative to MEDIA_ROOT): a
    query's files are its owner's and staff's only; other media are every signed-in user's (the
    views that hand out library image URLs keep study cases from readers)."""
    if not name.startswith(PRIVATE_QUERY_PREFIXES) or user.is_staff:
        return True
    return query_file_owner(name=name) == user.id


def query_file_owner(*, name: str) -> int | None:
    """The id of the user whose query stored this media file (the upload, its overlay or an
    evidence map), or None when no query holds it."""
    return (Query.objects.filter(Q(image=name) | Q(saliency=name) | Q(neighbours__evidence_query=name)
                                 | Q(neighbours__evidence_case=name))
            .values_list("user_id", flat=True).first())


def _media(name: str) -> str:
    return f"{settings.MEDIA_URL}{name}" if name else ""


def case_credit(case: Case) -> dict:
    """Who the image is credited to and its licence, as the source states them (ISIC's terms ask
    for them wherever the image is shown); empty strings when the source gives none."""
    return {"attribution": case.attribution, "copyright_license": case.copyright_license}


def case_withdrawal(case: Case) -> dict | None:
    """When and why a case shown in a past result was withdrawn from the library since; None
    while it is in the library."""
    if case.withdrawn_at is None:
        return None
    return {"at": case.withdrawn_at.isoformat(), "reason": case.withdrawn_reason}


def case_metadata(case: Case) -> dict:
    return {
        "age": case.age, "sex": case.sex, "localization": case.localization, "lesion_id": case.lesion_id,
        "diagnosis_type": case.dx_type, "diagnosis_type_label": case.get_dx_type_display(),
    }


# --- A query's evidence maps (its second stage, retrieval.services.evidence) -------------------
EVIDENCE_PENDING, EVIDENCE_READY, EVIDENCE_FAILED = "pending", "ready", "failed"


def evidence_job_of(query: Query) -> QueryEvidence | None:
    """The query's second-stage job, or None (evidence maps switched off, or a query stored
    before there was a second stage)."""
    try:
        return query.evidence_job
    except QueryEvidence.DoesNotExist:
        return None


def evidence_settled(query: Query) -> bool:
    """Nothing more will change in the query's result: it failed, or it is done and its second
    stage (if any) finished."""
    if query.status == Query.Status.FAILED:
        return True
    if query.status != Query.Status.DONE:
        return False
    job = evidence_job_of(query)
    return job is None or job.finished


def neighbour_evidence(row: QueryNeighbour, job: QueryEvidence | None) -> dict | None:
    """One neighbour's evidence state as the API shows it: ``{"status": "ready", query_map,
    case_map}``, ``pending`` while the second stage runs, ``failed`` with a message; None when
    no evidence is computed for this query."""
    if row.evidence_query and row.evidence_case:
        return {"status": EVIDENCE_READY, "query_map": row.evidence_query, "case_map": row.evidence_case, "message": ""}
    if row.evidence_error:
        return {"status": EVIDENCE_FAILED, "query_map": "", "case_map": "", "message": row.evidence_error}
    if job is None:
        return None
    if job.status == QueryEvidence.Status.FAILED:
        return {"status": EVIDENCE_FAILED, "query_map": "", "case_map": "", "message": job.message}
    if job.status == QueryEvidence.Status.DONE:  # a neighbour added after the job ran (cannot happen today)
        return {"status": EVIDENCE_FAILED, "query_map": "", "case_map": "", "message": "No evidence maps for this case."}
    return {"status": EVIDENCE_PENDING, "query_map": "", "case_map": "", "message": ""}


def _evidence_payload(state: dict | None, url: Callable[[str], str]) -> dict | None:
    if state is None:
        return None
    return {"status": state["status"],
            "query_map_url": url(_media(state["query_map"])) if state["query_map"] else None,
            "case_map_url": url(_media(state["case_map"])) if state["case_map"] else None,
            "message": state["message"] or None}


def query_payload(query: Query, *, url: Callable[[str], str] = lambda path: path) -> dict:
    """The query as the API returns it (and the result page renders it)."""
    index = query.index_version
    done = query.status == Query.Status.DONE
    neighbours = []
    job = evidence_job_of(query) if done else None
    if done:
        for row in query.neighbours.select_related("case").order_by("rank"):
            case = row.case
            neighbours.append({
                "rank": row.rank, "case_id": case.id, "image_id": case.image_id, "diagnosis": case.dx,
                "diagnosis_label": BY_CODE[case.dx].label, "similarity": round(row.similarity, 4),
                "image_url": url(_media(case.image.name)), "saliency_url": url(_media(row.saliency)) if row.saliency else None,
                "evidence": _evidence_payload(neighbour_evidence(row, job), url),
                "metadata": case_metadata(case), **case_credit(case), "withdrawn": case_withdrawal(case),
            })
    return {
        "id": query.id,
        "status": query.status,
        "error": query.message or None,
        "created": query.created_at.isoformat(),
        "k": query.k,
        "method": query.method,
        "method_label": _method_label(query.method),
        "model_version": index.model_version_id if index else None,
        "index_version": index.id if index else None,
        "query_image_url": url(_media(query.image.name)),
        "query_saliency_url": url(_media(query.saliency.name)) if query.saliency else None,
        "neighbour_vote": query.neighbour_vote if done else None,
        "warning": query.warning or None,
        "ood": query_ood_payload(query) if done else None,
        "acquisition": query.acquisition or {},
        "filters": query_filter_payload(query),
        "neighbours": neighbours,
    }


def query_filter_payload(query: Query) -> dict:
    """The query's neighbour filter as shown (API, result page): patient ids, even pseudonymous
    ones, are never shown back, only how many were excluded."""
    shown = dict(query.search_filter or {})
    patients = shown.pop("exclude_patient_ids", [])
    if patients:
        shown["excluded_patients"] = len(patients)
    return shown


def search_filter_choices() -> dict[str, list[str]]:
    """The values the search page offers to restrict neighbours by: the body sites and source
    datasets that the library cases of the active index's collection actually have (sorted;
    empty lists when no index is ready)."""
    index = index_for_queries()
    if index is None:
        return {"sites": [], "datasets": []}
    cases = Case.objects.in_library().filter(collection=index.collection).exclude(split=TEST)
    return {"sites": sorted(set(cases.values_list("localization", flat=True))),
            "datasets": sorted(set(cases.exclude(source_dataset="").values_list("source_dataset", flat=True)))}


def search_filter_text(shown: dict) -> str:
    """One line saying how a query's neighbours were restricted (the result page and the PDF
    report), from its shown filter (``query_filter_payload``); empty for the unfiltered search,
    the thesis's view. Patients are counted, never named."""
    parts = []
    if shown.get("sites"):
        parts.append("body site " + ", ".join(shown["sites"]))
    if shown.get("sexes"):
        parts.append("sex " + ", ".join(shown["sexes"]))
    low, high = shown.get("age_min"), shown.get("age_max")
    if low is not None or high is not None:
        parts.append(f"age {low}-{high}" if low is not None and high is not None
                     else f"age {low} or more" if low is not None else f"age {high} or less")
    if shown.get("datasets"):
        parts.append("dataset " + ", ".join(shown["datasets"]))
    excluded = []
    if shown.get("exclude_lesion_ids"):
        count = len(shown["exclude_lesion_ids"])
        excluded.append(f"{count} lesion{'s' if count != 1 else ''}")
    if shown.get("excluded_patients"):
        count = shown["excluded_patients"]
        excluded.append(f"{count} patient{'s' if count != 1 else ''}")
    if excluded:
        parts.append("excluding the photos of " + " and ".join(excluded))
    return f"Similar cases restricted to: {'; '.join(parts)}." if parts else ""


def query_ood_payload(query: Query) -> dict | None:
    """The out-of-distribution score a finished query was judged by, its threshold and method
    (``warning`` is set when the score is below the threshold); None when none was computed."""
    if not query.ood_method:
        return None
    return {"score": _rounded(query.ood_score), "threshold": _rounded(query.ood_threshold), "method": query.ood_method}


def neighbour_vote_rows(vote: dict | None) -> list[dict]:
    """The stored vote's classes in its own order (the winner first), with count, share and whole
    percent, as the result page, the search history and the PDF report show them.

    The order comes from the stored ``order`` and never from sorting the shares here: the rule
    that breaks ties lives in ``retrieval.ml.metrics.neighbour_vote_tally`` only."""
    if not vote:
        return []
    n = vote["n"]
    return [{"cls": BY_CODE[code], "count": vote["counts"][code], "n": n, "share": vote["counts"][code] / n,
             "percent": _percent(vote["counts"][code], n)} for code in vote["order"]]


def _percent(count: int, n: int) -> int:
    """count / n in whole percent, halves rounded up (as query.js's Math.round, so both pages agree)."""
    return (200 * count + n) // (2 * n)


def query_report_data(query: Query, *, generated) -> QueryReport:
    """What the PDF report of a DONE query prints (``retrieval.report``), its images read from the
    media storage; ``generated``: the report's time. ReportUnavailable ``image_missing`` when the
    query's image, its overlay or a similar case's library image is not in the storage. No patient
    identifier is read into it (``Case.patient_id``, the upload's file name)."""
    from django.utils import timezone

    # reportlab loads only when a report is made (not in every process that reads a selector).
    from retrieval.report import QueryReport, ReportNeighbour, VoteRow

    payload = query_payload(query)
    rows = {row.rank: row for row in query.neighbours.select_related("case")}
    neighbours = []
    for n in payload["neighbours"]:
        case = rows[n["rank"]].case
        meta = n["metadata"]
        neighbours.append(ReportNeighbour(
            rank=n["rank"], image_id=n["image_id"], diagnosis=n["diagnosis"], diagnosis_label=n["diagnosis_label"],
            colour=BY_CODE[n["diagnosis"]].colour, similarity=n["similarity"], age=meta["age"], sex=meta["sex"],
            localization=meta["localization"], diagnosis_type=meta["diagnosis_type_label"],
            image=_stored_bytes(case.image.name, f"the library image of rank {n['rank']} (image {case.image_id})"),
            attribution=case.attribution, copyright_license=case.copyright_license,
            withdrawn_reason=(n["withdrawn"] or {}).get("reason", "")))
    vote = [VoteRow(code=row["cls"].code, label=row["cls"].label, colour=row["cls"].colour, count=row["count"],
                    n=row["n"], percent=row["percent"]) for row in neighbour_vote_rows(payload["neighbour_vote"])]
    index = query.index_version
    model = index.model_version if index else None
    local = timezone.localtime
    return QueryReport(
        query_id=query.id, created=local(query.created_at),
        finished=local(query.finished_at) if query.finished_at else None, generated=local(generated),
        method_label=payload["method_label"],
        model_version=f"#{model.id} ({model.config}, {model.get_stage_display()})" if model else "unknown",
        index_version=f"#{index.id} (collection {index.collection})" if index else "unknown",
        image=_stored_bytes(query.image.name, "the query image"),
        saliency=_stored_bytes(query.saliency.name, "the saliency overlay") if query.saliency else None,
        # The vote's note as the worker stored it with the vote (retrieval.services.queries.VOTE_NOTE).
        vote_note=(payload["neighbour_vote"] or {}).get("note", ""), vote=vote, neighbours=neighbours,
        warning=payload["warning"] or "", restriction=search_filter_text(payload["filters"]))


def _stored_bytes(name: str, what: str) -> bytes:
    from django.core.files.storage import default_storage

    from retrieval.report import ReportUnavailable

    try:
        with default_storage.open(name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ReportUnavailable(f"The report cannot be made: {what} is missing from the media storage.",
                                "image_missing") from None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _method_label(name: str) -> str:
    from retrieval.methods import METHODS

    return METHODS[name].label if name in METHODS else name


def retrieval_methods() -> list[dict]:
    """Every retrieval method, whether the index that serves queries now offers it, and the default."""
    from retrieval.methods import DEFAULT_METHOD, METHODS

    served = set(index_methods(index_for_queries()))
    preparing = methods_being_prepared()
    out = []
    for method in METHODS.values():
        state = "available" if method.name in served else ("being prepared" if method.name in preparing
                                                            else "unavailable")
        out.append({"name": method.name, "label": method.label, "description": method.description,
                    "source": method.source, "available": state == "available", "state": state,
                    "preparation": preparing.get(method.name, "") if state == "being prepared" else "",
                    "default": method.name == DEFAULT_METHOD})
    return out


def methods_being_prepared() -> dict[str, str]:
    """Methods that an unfinished job will bring: an index build that will serve them (its
    progress), or the training of the embedding they need (its epochs); what it is doing, by method."""
    from retrieval.methods import METHODS

    unfinished = (IndexVersion.Status.PENDING, IndexVersion.Status.RUNNING)
    out: dict[str, str] = {}
    for build in IndexVersion.objects.filter(status__in=unfinished).order_by("created_at"):
        progress = f" ({round(100 * build.done / build.total)} %)" if build.total else ""
        for name in build.methods or []:
            out.setdefault(name, f"being added to the case library index{progress}")
    for job in TrainingJob.objects.filter(status__in=unfinished, stage__in=["contrastive", "triplet"]):
        for name, method in METHODS.items():
            if job.stage in method.needs:
                out.setdefault(name, f"its {job.stage} model is being trained (epoch {job.done} of {job.total})")
    return out


# --- Index --------------------------------------------------------------------------------

def index_methods(index: IndexVersion | None) -> list[str]:
    """The retrieval methods an index serves, in the registry's order (SE-CBIR always)."""
    return _served_methods(index.methods) if index is not None else []


def _served_methods(methods: list[str] | None) -> list[str]:
    from retrieval.methods import METHODS, SECBIR

    served = {SECBIR, *(methods or [])}
    return [name for name in METHODS if name in served]


def index_for_queries_brief() -> tuple[int, list[str]] | None:
    """(id, methods served) of :func:`index_for_queries`'s index, read without its model rows:
    what a query upload needs, in one narrow read (the full row costs several times more)."""
    active = IndexVersion.objects.filter(active=True)
    if settings.QUERY_COLLECTION:
        active = active.filter(collection=settings.QUERY_COLLECTION)
    row = active.order_by("-activated_at", "-id").values_list("id", "methods").first()
    return None if row is None else (row[0], _served_methods(row[1]))


def index_for_queries() -> IndexVersion | None:
    """The active index queries go to: the configured collection's, else the most recently activated."""
    active = IndexVersion.objects.filter(active=True).select_related("model_version__parent")
    if settings.QUERY_COLLECTION:
        active = active.filter(collection=settings.QUERY_COLLECTION)
    return active.order_by("-activated_at", "-id").first()


def index_get(*, index_id: int) -> IndexVersion | None:
    return IndexVersion.objects.filter(id=index_id).first()


def index_active(*, collection: str, model_version: ModelVersion | None = None) -> IndexVersion | None:
    """The collection's active index (of that model version, when given); None when there is none."""
    active = IndexVersion.objects.filter(collection=collection, active=True)
    if model_version is not None:
        active = active.filter(model_version=model_version)
    return active.first()


def index_referencing_relations() -> list[tuple[type, str]]:
    """Every (model, foreign-key field name) whose rows reference an index version, other than an
    extension's ``base``: ``Query.index_version``, ``readerstudy.Study.index_version`` (and any
    model added later). A referenced index is never removable. Rows deleted with their index
    (``on_delete=CASCADE``: an ``IndexChunk`` of its build) are parts of it, not references."""
    return [(rel.related_model, rel.field.name) for rel in IndexVersion._meta.related_objects
            if rel.one_to_many and rel.related_model is not IndexVersion and rel.on_delete is not models.CASCADE]


def index_removable_condition() -> Q:
    """The rule of ``cleanup_indexes``, as one condition on ``IndexVersion`` rows (the removal
    service checks it again, in its transaction, on the rows it deletes). An index version is
    removable when it is

    * not active (the active one serves its collection's queries),
    * finished (DONE) or FAILED: a PENDING or RUNNING build is never touched,
    * referenced by no query and no reader study (:func:`index_referencing_relations`),
    * not the base of an unfinished incremental build (a build reads its base's files until it is
      assembled; a finished extension holds full copies of its base's rows, so it does not keep
      its base),
    * not the newest DONE version of a collection that has no active one (a collection keeps at
      least one finished index).
    """
    unfinished = (IndexVersion.Status.PENDING, IndexVersion.Status.RUNNING)
    condition = Q(active=False) & ~Q(status__in=unfinished)
    for model, field in index_referencing_relations():
        condition &= ~Exists(model.objects.filter(**{field: OuterRef("pk")}))
    condition &= ~Exists(IndexVersion.objects.filter(base=OuterRef("pk"), status__in=unfinished))
    newest_done = (IndexVersion.objects.filter(collection=OuterRef("collection"), status=IndexVersion.Status.DONE)
                   .order_by("-created_at", "-id").values("id")[:1])
    last_of_collection = (Q(status=IndexVersion.Status.DONE, id=Subquery(newest_done))
                          & ~Exists(IndexVersion.objects.filter(collection=OuterRef("collection"), active=True)))
    return condition & ~last_of_collection


def index_removable_list(*, collection: str | None = None) -> QuerySet[IndexVersion]:
    """The index versions ``cleanup_indexes`` removes (:func:`index_removable_condition`), oldest
    first, of one collection or all."""
    return _narrowed(IndexVersion.objects.filter(index_removable_condition()), collection=collection).order_by(
        "created_at", "id")


def index_builds_recent(*, collection: str | None = None) -> list[IndexVersion]:
    """The newest ``RECENT_BUILDS`` index builds (newest first), of one collection or all."""
    builds = IndexVersion.objects.all()
    if collection:
        builds = builds.filter(collection=collection)
    return list(builds.order_by("-created_at", "-id")[:RECENT_BUILDS])


def _index_summary(index: IndexVersion) -> dict:
    return {
        "id": index.id, "collection": index.collection, "model_version": index.model_version_id,
        "status": index.status, "active": index.active, "done": index.done, "total": index.total,
        "size": index.size, "dimension": index.dimension, "message": index.message,
        "incremental_from": index.base_id, "created": index.created_at.isoformat(),
        "finished": index.finished_at.isoformat() if index.finished_at else None,
        "activated": index.activated_at.isoformat() if index.activated_at else None,
        "ood_threshold": (index.calibration or {}).get("threshold"),
        "ood": index_ood_summary(index),
        "methods": index_methods(index),
    }


def index_ood_summary(index: IndexVersion) -> dict | None:
    """The out-of-distribution warning of an index: its score, threshold and the figures measured when
    it was calibrated (report half: AUROC, share of non-dermoscopic images warned, overall and per
    kind, share of held-out library images warned). None before the index is calibrated."""
    from retrieval.ood_record import LEGACY, VERSION

    calibration = index.calibration or {}
    if not calibration:
        return None
    if calibration.get("version", 1) < VERSION:
        return {"method": LEGACY, "threshold": calibration.get("threshold"), "auroc": None, "ood_warned": None,
                "ood_warned_per_kind": {}, "id_warned": None, "target_false_warning": None,
                "n_in_distribution": calibration.get("n"), "n_evaluation": None, "calibrated": None,
                "error": None}
    return {
        "method": calibration.get("method"), "threshold": calibration.get("threshold"),
        "auroc": calibration.get("auroc"), "ood_warned": calibration.get("ood_warned"),
        "ood_warned_per_kind": calibration.get("ood_warned_per_kind") or {},
        "id_warned": calibration.get("id_warned"),
        "target_false_warning": calibration.get("target_false_warning"),
        "n_in_distribution": (calibration.get("in_distribution") or {}).get("n"),
        "n_evaluation": (calibration.get("evaluation_set") or {}).get("n"),
        "calibrated": calibration.get("calibrated_at"), "error": calibration.get("error"),
    }


def index_status(*, collection: str | None = None) -> dict:
    """The active index and recent builds (newest first), of one collection or all. (Pages and the
    API call ``retrieval.services.polling.index_builds_refresh`` first, so that a lost build shows
    as re-sent.)"""
    recent = [_index_summary(index) for index in index_builds_recent(collection=collection)]
    active = index_active(collection=collection) if collection else index_for_queries()
    return {"collection": collection or (active.collection if active else None),
            "active": _index_summary(active) if active else None, "builds": recent}
