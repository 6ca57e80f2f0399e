"""Assigning readers: seeded samples and orders, Task 2 in a different order, readers only."""
from __future__ import annotations

import pytest

from readerstudy.models import AssignedCase, Assignment, StudyCase
from readerstudy.services import StudyError, reader_seed, study_assign, study_unassign


def _orders(assignment):
    items = list(AssignedCase.objects.filter(assignment=assignment))
    first = [i.study_case_id for i in sorted(items, key=lambda i: i.task1_position)]
    second = [i.study_case_id for i in sorted(items, key=lambda i: i.task2_position)]
    return first, second


def test_each_reader_gets_a_seeded_sample_in_two_different_orders(make_study, readers):
    study = make_study(cases_per_reader=4)
    n_cases = StudyCase.objects.filter(study=study).count()
    assert n_cases > 4
    study_assign(study=study, readers=readers)
    for reader in readers:
        assignment = Assignment.objects.get(study=study, reader=reader)
        first, second = _orders(assignment)
        assert len(first) == 4 and sorted(first) == sorted(second) and first != second
        assert assignment.seed == reader_seed(study, reader)
        positions = AssignedCase.objects.filter(assignment=assignment)
        assert sorted(positions.values_list("task1_position", flat=True)) == [1, 2, 3, 4]
        assert sorted(positions.values_list("task2_position", flat=True)) == [1, 2, 3, 4]
    # Seeded: the same study seed and reader give the same sample and orders again.
    saved = {r.id: _orders(Assignment.objects.get(study=study, reader=r)) for r in readers}
    Assignment.objects.filter(study=study).delete()
    study_assign(study=study, readers=readers)
    assert {r.id: _orders(Assignment.objects.get(study=study, reader=r)) for r in readers} == saved
    # Different readers get different samples or orders.
    assert len({tuple(v[0]) for v in saved.values()}) > 1


def test_a_study_smaller_than_the_sample_gives_every_case(make_study, readers):
    study = make_study(cases_per_reader=1000)
    study_assign(study=study, readers=readers[:1])
    assignment = Assignment.objects.get(study=study)
    assert assignment.items.count() == StudyCase.objects.filter(study=study).count()


def test_assigning_twice_keeps_the_first_assignment(make_study, readers):
    study = make_study()
    study_assign(study=study, readers=readers[:1])
    before = _orders(Assignment.objects.get(study=study))
    assert study_assign(study=study, readers=readers[:1]) == []
    assert _orders(Assignment.objects.get(study=study)) == before


def test_only_readers_can_be_assigned(make_study, clinician):
    study = make_study()
    with pytest.raises(StudyError, match="reader group"):
        study_assign(study=study, readers=[clinician])
    assert not Assignment.objects.exists()


def test_a_reader_with_answers_cannot_be_removed(open_study, readers):
    from readerstudy.services import answer_submit

    assignment = Assignment.objects.get(study=open_study, reader=readers[0])
    answer_submit(assignment=assignment, task=1, position=1, answer="nv", confidence=3)
    with pytest.raises(StudyError, match="answered already"):
        study_unassign(study=open_study, reader=readers[0])
    study_unassign(study=open_study, reader=readers[1])
    assert list(Assignment.objects.filter(study=open_study).values_list("reader__username", flat=True)) == [
        "reader_1", "reader_3"]
