"""Assigning readers: seeded samples and orders, Task 2 in a different order, readers only."""
from __future__ import annotations

import numpy as np
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


def _sample(study, reader):
    return set(AssignedCase.objects.filter(assignment__study=study, assignment__reader=reader)
               .values_list("study_case_id", flat=True))


def test_a_crossed_study_gives_every_reader_the_same_cases_in_their_own_orders(make_study, readers):
    study = make_study(cases_per_reader=4, design="crossed")
    assert StudyCase.objects.filter(study=study).count() > 4
    study_assign(study=study, readers=readers)
    samples = [_sample(study, reader) for reader in readers]
    assert len(samples[0]) == 4 and samples[0] == samples[1] == samples[2]
    orders = [_orders(Assignment.objects.get(study=study, reader=reader))[0] for reader in readers]
    assert len({tuple(order) for order in orders}) > 1  # same cases, not the same order
    # A reader assigned later, in a request of their own, reads the same cases too.
    later = make_study(name="Later", cases_per_reader=4, design="crossed")
    study_assign(study=later, readers=readers[:1])
    study_assign(study=later, readers=readers[1:2])
    assert _sample(later, readers[0]) == _sample(later, readers[1]) and len(_sample(later, readers[1])) == 4


def test_a_nested_study_gives_each_reader_their_own_cases_and_refuses_when_they_run_out(make_study, readers):
    study = make_study(cases_per_reader=2, design="nested")
    n_cases = StudyCase.objects.filter(study=study).count()
    assert n_cases >= 6
    study_assign(study=study, readers=readers)
    samples = [_sample(study, reader) for reader in readers]
    assert all(len(sample) == 2 for sample in samples)
    assert not (samples[0] & samples[1]) and not (samples[0] & samples[2]) and not (samples[1] & samples[2])
    # A removed reader's cases go to the next reader; nothing is shared.
    study_unassign(study=study, reader=readers[2])
    study_assign(study=study, readers=[readers[2]])
    assert _sample(study, readers[2]).isdisjoint(samples[0] | samples[1])

    greedy = make_study(name="Greedy", cases_per_reader=n_cases - 1, design="nested")
    study_assign(study=greedy, readers=readers[:1])
    with pytest.raises(StudyError, match="Not enough cases left for reader_2") as refused:
        study_assign(study=greedy, readers=readers[1:2])
    assert refused.value.status_code == 409 and refused.value.code == "not_enough_cases"
    assert not Assignment.objects.filter(study=greedy, reader=readers[1]).exists()


def test_studies_from_before_designs_keep_their_overlapping_samples(make_study, readers):
    study = make_study(cases_per_reader=4)
    type(study).objects.filter(id=study.id).update(design="overlapping")
    study.refresh_from_db()
    study_assign(study=study, readers=readers)
    for reader in readers:  # each reader's own seeded sample, as before
        rng = np.random.default_rng(reader_seed(study, reader))
        cases = list(StudyCase.objects.filter(study=study).order_by("position").values_list("id", flat=True))
        expected = {cases[i] for i in rng.choice(len(cases), size=4, replace=False).tolist()}
        assert _sample(study, reader) == expected


def test_new_studies_take_only_the_two_designs(study_index, study_admin):
    from readerstudy.services import study_create

    with pytest.raises(StudyError, match="design must be one of crossed, nested"):
        study_create(user=study_admin, name="Legacy", index_version=study_index, design="overlapping")
