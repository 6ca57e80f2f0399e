"""Lesion-grouped, class-stratified train/val/test splits. Pure Python, no database.

The thesis split HAM10000 80/10/10 stratified by class but ignored ``lesion_id``, so photos
of one lesion landed in both training and test sets and inflated every retrieval figure.
Here whole lesions are assigned: within each class, lesions are shuffled with the seed and
each goes to the split that is furthest below its target number of images of that class.
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


def validate_fractions(train: float, val: float, test: float) -> dict[str, float]:
    fractions = {TRAIN: train, VAL: val, TEST: test}
    if any(f < 0 for f in fractions.values()):
        raise ValueError("split fractions must not be negative")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1 (got {sum(fractions.values()):.4f})")
    return fractions


def grouped_stratified_split(items: Iterable[Item], fractions: dict[str, float], seed: int) -> dict[Hashable, str]:
    """Assign every item to a split; all items of one lesion share a split.

    A lesion's class is its most common ``dx`` (ties broken by class code order). The result
    depends only on the items (not their order), the fractions and the seed.
    """
    lesions: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        lesions[item.lesion_id].append(item)
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
