"""The lesion-grouped, class-stratified split, on the real HAM10000 metadata and in the library."""
from __future__ import annotations

from collections import Counter
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from retrieval.classes import CODES
from retrieval.models import Case
from retrieval.splits import SPLITS, Item, group_keys, grouped_stratified_split, validate_fractions
from tests.conftest import real_metadata_rows


@pytest.fixture(scope="module")
def real_items():
    rows = real_metadata_rows()
    assert len(rows) == 10015
    return [Item(r["image_id"], r["lesion_id"], r["dx"]) for r in rows]


def test_real_metadata_split_is_stratified_and_lesion_grouped(real_items):
    assignment = grouped_stratified_split(real_items, validate_fractions(0.8, 0.1, 0.1), seed=71)

    assert len({item.lesion_id for item in real_items}) == 7470
    lesion_splits: dict[str, set[str]] = {}
    for item in real_items:
        lesion_splits.setdefault(item.lesion_id, set()).add(assignment[item.key])
    assert sum(len(s) > 1 for s in lesion_splits.values()) == 0

    overall = Counter(item.dx for item in real_items)
    sizes = Counter(assignment.values())
    for split, fraction in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(sizes[split] / len(real_items) - fraction) < 0.01
        per_class = Counter(item.dx for item in real_items if assignment[item.key] == split)
        for code in CODES:
            share, expected = per_class[code] / sizes[split], overall[code] / len(real_items)
            assert abs(share - expected) < 0.01, (split, code, share, expected)
        assert set(per_class) == set(CODES)  # every class in every split


def test_split_is_deterministic_and_seed_dependent(real_items):
    fractions = validate_fractions(0.8, 0.1, 0.1)
    first = grouped_stratified_split(real_items, fractions, seed=71)
    assert grouped_stratified_split(list(reversed(real_items)), fractions, seed=71) == first
    assert grouped_stratified_split(real_items, fractions, seed=72) != first


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.2), (1.1, -0.05, -0.05)])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError):
        validate_fractions(*fractions)


@pytest.mark.django_db
def test_split_library_command_assigns_whole_lesions(media_root):
    # 30 lesions of 1-3 images each in two classes
    pk = 0
    for lesion in range(30):
        for photo in range(1 + lesion % 3):
            pk += 1
            Case.objects.create(collection="c", image=f"cases/{pk}.jpg", sha256=f"{pk:064x}", width=1, height=1,
                                image_id=f"IMG_{pk}", lesion_id=f"L{lesion}", dx="nv" if lesion % 4 else "mel",
                                dx_type="histo")
    out = StringIO()
    call_command("split_library", "--seed", "71", stdout=out)

    assert "0 lesion(s) in more than one split" in out.getvalue()
    assert not Case.objects.filter(split="none").exists()
    for lesion in range(30):
        assert Case.objects.filter(lesion_id=f"L{lesion}").values("split").distinct().count() == 1
    assert Case.objects.filter(split="test").exists() and Case.objects.filter(split="val").exists()

    again = StringIO()
    call_command("split_library", "--seed", "71", stdout=again)
    assert "0 case(s) changed split" in again.getvalue()


@pytest.mark.django_db
def test_split_library_on_empty_library_is_a_clear_error():
    with pytest.raises(CommandError, match="library is empty"):
        call_command("split_library")


def test_group_keys_join_lesions_through_a_shared_patient_and_nothing_else():
    items = [Item(1, "L_b", "nv", "IP_1"), Item(2, "L_a", "mel", "IP_1"), Item(3, "L_c", "nv", "IP_2"),
             Item(4, "L_c", "nv", ""), Item(5, "L_d", "nv", ""), Item(6, "IP_1", "bkl", "")]
    groups = group_keys(items)
    # 1 and 2 share a patient; 3 and 4 a lesion (4's patient unknown); 5 is alone; a lesion id that
    # equals a patient id (6) is not joined to that patient.
    assert groups == {1: "L_a", 2: "L_a", 3: "L_c", 4: "L_c", 5: "L_d", 6: "IP_1"}
    assert group_keys(list(reversed(items))) == groups
    assignment = grouped_stratified_split(items, validate_fractions(0.5, 0.25, 0.25), seed=1)
    assert assignment[1] == assignment[2] and assignment[3] == assignment[4]
