"""Preparing a study: the curated query set from the test split, frozen neighbours, counts."""
from __future__ import annotations

import pytest

from readerstudy.models import Study, StudyCase, StudyNeighbour
from readerstudy.services import Candidate, curate, study_prepare
from retrieval.classes import TEST
from retrieval.ml.metrics import neighbour_vote
from retrieval.models import Case


def _candidate(case_id, lesion, neighbour_lesions):
    return Candidate(case_id, lesion, tuple((100 + i, les, 1.0 - i / 10) for i, les in enumerate(neighbour_lesions)))


def test_curation_keeps_one_image_per_lesion_and_drops_queries_whose_neighbours_repeat_a_lesion():
    candidates = [
        _candidate(1, "L1", ["a", "b", "c", "d", "e", "f"]),
        _candidate(2, "L1", ["g", "h", "i", "j", "k", "l"]),   # second image of lesion L1: dropped
        _candidate(3, "L2", ["a", "a", "c", "d", "e", "f"]),   # two neighbours of lesion a: dropped
        _candidate(4, "L3", ["a", "b", "c", "d", "e", "f", "a"]),  # the repeat is 7th, not shown: kept
        _candidate(5, "L4", ["a", "b", "c", "d", "e", "b"]),   # repeat at rank 6: dropped
    ]
    kept, counts = curate(candidates, shown=6)
    assert [c.case_id for c in kept] == [1, 4]
    assert counts == {"test_images": 5, "one_per_lesion": 4, "dropped_duplicate_lesion_neighbours": 2,
                      "query_set": 2}


def test_prepared_study_holds_test_images_one_per_lesion_with_frozen_neighbours(make_study, study_index):
    study = make_study()
    cases = list(StudyCase.objects.filter(study=study).select_related("case"))
    tests = Case.objects.filter(collection=study_index.collection, split=TEST)
    assert cases and all(c.case.split == TEST for c in cases)
    assert len({c.case.lesion_id for c in cases}) == len(cases)
    assert [c.position for c in cases] == list(range(1, len(cases) + 1))
    assert study.curation["test_images"] == tests.count()
    assert study.curation["one_per_lesion"] == tests.values("lesion_id").distinct().count()
    assert study.curation["query_set"] == len(cases)
    assert (study.curation["one_per_lesion"] - study.curation["dropped_duplicate_lesion_neighbours"]
            == len(cases))
    for study_case in cases:
        neighbours = list(StudyNeighbour.objects.filter(study_case=study_case).select_related("case"))
        assert [n.rank for n in neighbours] == list(range(1, study.neighbours_shown + 1))
        assert all(n.case.split != TEST for n in neighbours)  # the index holds no test image
        lesions = [n.case.lesion_id for n in neighbours]
        assert len(set(lesions)) == len(lesions)
        assert study_case.majority_vote == neighbour_vote([n.case.dx for n in neighbours])
        sims = [n.similarity for n in neighbours]
        assert sims == sorted(sims, reverse=True)


def test_preparing_twice_duplicates_nothing(make_study):
    study = make_study()
    before = StudyCase.objects.filter(study=study).count()
    assert study_prepare(study_id=study.id, worker="again") is False
    assert StudyCase.objects.filter(study=study).count() == before


def test_a_collection_without_test_split_fails_with_a_message(ready_index, study_admin):
    from readerstudy.services import study_create

    Case.objects.filter(collection=ready_index.collection, split=TEST).update(split="train")
    study = study_create(user=study_admin, name="No tests", index_version=ready_index)
    assert study_prepare(study_id=study.id, worker="test")
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert "test split" in study.message and not StudyCase.objects.filter(study=study).exists()


@pytest.mark.django_db
def test_a_study_needs_a_finished_index(study_admin):
    from readerstudy.services import StudyError, study_create

    with pytest.raises(StudyError, match="no finished case-library index"):
        study_create(user=study_admin, name="Too early")
    assert not Study.objects.exists()


def test_a_new_study_shows_no_case_withdrawn_from_the_library(make_study):
    from retrieval.services import case_withdraw

    first = make_study(name="Before")
    shown_case = StudyCase.objects.filter(study=first).order_by("position").first()
    neighbour = StudyNeighbour.objects.filter(study_case=shown_case).order_by("rank").first()
    case_withdraw(case=shown_case.case, reason="test image misdiagnosed")
    case_withdraw(case=neighbour.case, reason="duplicate")
    second = make_study(name="After")
    assert not StudyCase.objects.filter(study=second, case_id=shown_case.case_id).exists()
    assert not StudyNeighbour.objects.filter(study_case__study=second, case_id=neighbour.case_id).exists()
    assert StudyNeighbour.objects.filter(study_case__study=second).count() \
        == second.neighbours_shown * StudyCase.objects.filter(study=second).count()  # still a full row each
    # The first study's frozen cases and neighbours are what it showed; they are not changed.
    assert StudyNeighbour.objects.filter(study_case=shown_case, case_id=neighbour.case_id).exists()
