"""Lesion-grouped, class-stratified train/val/test splits. Pure Python, no database.

The thesis split HAM10000 80/10/10 stratified by class but ignored ``lesion_id``, so photos
of one lesion landed in both training and test sets and inflated every retrieval figure.
Here whole lesions are assigned: within each class, lesions are shuffled with the seed and
each goes to the split that is furthest below its target number of images of that class.
Where the source publishes a (pseudonymous) patient id (the ISIC archive), the unit is the
patient instead: all images of one patient, and of every lesion any of them shows, share a split,
so a patient's other moles cannot leak into the test set either.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from retrieval.classes import CODES, TEST, TRAIN, VAL

SPLITS = (TRAIN, VAL, TEST)


@dataclass(frozen=True)
class Item:
    key: Hashable  # what the caller wants back (a case id, an image id)
    lesion_id: str
    dx: str
    patient_id: str = ""  # empty: not known, the lesion alone is the unit


def group_keys(items: Iterable[Item]) -> dict[Hashable, str]:
    """Item key -> its group: the items linked by a shared lesion or a shared patient id (connected
    components), named by the group's smallest lesion id. Without patient ids, the lesion."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(a: str, b: str) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:  # the smaller name becomes the root, so the result does not depend on order
            parent[max(root_a, root_b)] = min(root_a, root_b)

    items = list(items)
    for item in items:
        # Prefixed, so that a lesion id and a patient id that happen to be equal are not merged.
        lesion = "L:" + item.lesion_id
        parent.setdefault(lesion, lesion)
        if item.patient_id:
            patient = "P:" + item.patient_id
            parent.setdefault(patient, patient)
            union(lesion, patient)
    return {item.key: find("L:" + item.lesion_id)[2:] for item in items}


def validate_fractions(train: float, val: float, test: float) -> dict[str, float]:
    fractions = {TRAIN: train, VAL: val, TEST: test}
    if any(f < 0 for f in fractions.values()):
        raise ValueError("split fractions must not be negative")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1 (got {sum(fractions.values()):.4f})")
    return fractions


def grouped_stratified_split(items: Iterable[Item], fractions: dict[str, float], seed: int) -> dict[Hashable, str]:
    """Assign every item to a split; all items of one lesion (and of one patient, where known:
    :func:`group_keys`) share a split.

    A group's class is its most common ``dx`` (ties broken by class code order). The result
    depends only on the items (not their order), the fractions and the seed.
    """
    items = list(items)
    group_of = group_keys(items)
    lesions: dict[str, list[Item]] = defaultdict(list)  # group -> items (a lesion, without patient ids)
    for item in items:
        lesions[group_of[item.key]].append(item)
    by_class: dict[str, list[str]] = defaultdict(list)
    for lesion_id, members in lesions.items():
        counts = Counter(m.dx for m in members)
        dx = max(counts, key=lambda code: (counts[code], -_order(code)))
        by_class[dx].append(lesion_id)

    rng = random.Random(seed)
    assignment: dict[Hashable, str] = {}
    for dx in sorted(by_class, key=_order):
        lesion_ids = sorted(by_class[dx])
        rng.shuffle(lesion_ids)
        # Big lesions first (stable after the shuffle), so small ones can even out the counts.
        lesion_ids.sort(key=lambda lid: -len(lesions[lid]))
        total = sum(len(lesions[lid]) for lid in lesion_ids)
        assigned = dict.fromkeys(SPLITS, 0)
        for lesion_id in lesion_ids:
            size = len(lesions[lesion_id])
            split = max(SPLITS, key=lambda s: (fractions[s] * total - assigned[s], fractions[s]))
            assigned[split] += size
            for member in lesions[lesion_id]:
                assignment[member.key] = split
    return assignment


def _order(code: str) -> int:
    return CODES.index(code) if code in CODES else len(CODES)


def split_summary(items: Iterable[Item], assignment: dict[Hashable, str]) -> dict[str, Counter]:
    """Images per class in each split (for reports and tests)."""
    summary: dict[str, Counter] = {s: Counter() for s in SPLITS}
    for item in items:
        summary[assignment[item.key]][item.dx] += 1
    return summary
