"""Reads of the case library."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Count

from retrieval.classes import CLASSES, SPLIT_CHOICES
from retrieval.models import Case, LibraryCheck


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
    return {
        cls.code: list(Case.objects.filter(collection=collection, dx=cls.code).order_by("image_id")[:per_class])
        for cls in CLASSES
    }


def library_check_latest(*, collection: str) -> LibraryCheck | None:
    return LibraryCheck.objects.filter(collection=collection).first()
