"""Reads: the case library, queries and the index."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from django.conf import settings
from django.db.models import Count, QuerySet

from retrieval.classes import BY_CODE, CLASSES, SPLIT_CHOICES, TEST
from retrieval.models import Case, IndexVersion, LibraryCheck, Query
# Reading a query also notices a stuck one (a write); the service is re-exported here so that
# views have one obvious place to read from.
from retrieval.services.queries import query_refresh  # noqa: F401


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


def library_summary(*, collection: str) -> dict:
    """Images per class and split, lesion count and totals for one collection."""
    cases = Case.objects.filter(collection=collection)
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
    }


def case_examples(*, collection: str, per_class: int = 4) -> dict[str, list[Case]]:
    """A few library images per class, never from the test split: test images are the held-out
    queries of reader studies, and a reader must not see one of them with its diagnosis."""
    from django.db.models import F, Window
    from django.db.models.functions import RowNumber

    ranked = (Case.objects.filter(collection=collection).exclude(split=TEST)
              .annotate(rank=Window(RowNumber(), partition_by=[F("dx")], order_by=F("image_id").asc()))
              .filter(rank__lte=per_class).order_by("dx", "image_id"))  # one query, not one per class
    examples: dict[str, list[Case]] = {cls.code: [] for cls in CLASSES}
    for case in ranked:
        examples.setdefault(case.dx, []).append(case)
    return examples


def library_check_latest(*, collection: str) -> LibraryCheck | None:
    return LibraryCheck.objects.filter(collection=collection).first()


# --- Queries ------------------------------------------------------------------------------

def query_list(*, user) -> QuerySet[Query]:
    """The user's own queries, newest first."""
    return Query.objects.filter(user=user).select_related("index_version").order_by("-created_at", "-id")


def query_get(*, user, query_id: int) -> Query:
    """The user's query; ``Query.DoesNotExist`` when there is none or it is someone else's."""
    return query_list(user=user).get(id=query_id)


MAX_WAIT_SECONDS = 30.0


def query_wait(*, query: Query, timeout: float, interval: float = 0.02) -> Query:
    """Poll until the query is done or failed, or ``timeout`` (at most 30 s) has passed."""
    deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
    query = query_refresh(query=query)
    while query.status not in (Query.Status.DONE, Query.Status.FAILED) and time.monotonic() < deadline:
        time.sleep(interval)
        query = query_refresh(query=query)
    return query


def _media(name: str) -> str:
    return f"{settings.MEDIA_URL}{name}" if name else ""


def case_metadata(case: Case) -> dict:
    return {
        "age": case.age, "sex": case.sex, "localization": case.localization, "lesion_id": case.lesion_id,
        "diagnosis_type": case.dx_type, "diagnosis_type_label": case.get_dx_type_display(),
    }


def query_payload(query: Query, *, url: Callable[[str], str] = lambda path: path) -> dict:
    """The query as the API returns it (and the result page renders it)."""
    index = query.index_version
    done = query.status == Query.Status.DONE
    neighbours = []
    if done:
        for row in query.neighbours.select_related("case").order_by("rank"):
            case = row.case
            neighbours.append({
                "rank": row.rank, "case_id": case.id, "image_id": case.image_id, "diagnosis": case.dx,
                "diagnosis_label": BY_CODE[case.dx].label, "similarity": round(row.similarity, 4),
                "image_url": url(_media(case.image.name)), "saliency_url": url(_media(row.saliency)) if row.saliency else None,
                "evidence": ({"query_map_url": url(_media(row.evidence_query)),
                              "case_map_url": url(_media(row.evidence_case))}
                             if row.evidence_query and row.evidence_case else None),
                "metadata": case_metadata(case),
            })
    return {
        "id": query.id,
        "status": query.status,
        "error": query.error or None,
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
        "neighbours": neighbours,
    }


def query_ood_payload(query: Query) -> dict | None:
    """The out-of-distribution score a finished query was judged by, its threshold and method
    (``warning`` is set when the score is below the threshold); None when none was computed."""
    if not query.ood_method:
        return None
    return {"score": _rounded(query.ood_score), "threshold": _rounded(query.ood_threshold), "method": query.ood_method}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _method_label(name: str) -> str:
    from retrieval.methods import METHODS

    return METHODS[name].label if name in METHODS else name


def retrieval_methods() -> list[dict]:
    """Every retrieval method, whether the index that serves queries now offers it, and the default."""
    from retrieval.methods import DEFAULT_METHOD, METHODS
    from retrieval.services.queries import index_for_queries, index_methods

    served = set(index_methods(index_for_queries()))
    return [{"name": m.name, "label": m.label, "description": m.description, "source": m.source,
             "available": m.name in served, "default": m.name == DEFAULT_METHOD} for m in METHODS.values()]


# --- Index --------------------------------------------------------------------------------

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
        "methods": _served(index),
    }


def index_ood_summary(index: IndexVersion) -> dict | None:
    """The out-of-distribution warning of an index: its score, threshold and the figures measured when
    it was calibrated (report half: AUROC, share of non-dermoscopic images warned, overall and per
    kind, share of held-out library images warned). None before the index is calibrated."""
    from retrieval.services.ood import LEGACY, VERSION

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


def _served(index: IndexVersion) -> list[str]:
    from retrieval.services.queries import index_methods

    return index_methods(index)


def index_status(*, collection: str | None = None) -> dict:
    """The active index and recent builds (newest first), of one collection or all."""
    from retrieval.services.index import index_refresh
    from retrieval.services.queries import index_for_queries

    builds = IndexVersion.objects.all()
    if collection:
        builds = builds.filter(collection=collection)
    recent = []
    for index in builds.order_by("-created_at", "-id")[:10]:
        if index.status in (IndexVersion.Status.PENDING, IndexVersion.Status.RUNNING):
            index = index_refresh(index=index)
        recent.append(_index_summary(index))
    active = builds.filter(active=True).first() if collection else index_for_queries()
    return {"collection": collection or (active.collection if active else None),
            "active": _index_summary(active) if active else None, "builds": recent}
