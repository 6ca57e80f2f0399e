"""A study prepared by a real worker through the configured broker (filesystem on the embedded
default; Redis + PostgreSQL in CI's services run), then read and answered."""
from __future__ import annotations

import pytest

from readerstudy.models import Answer, Study, StudyCase
from readerstudy.services import answer_submit, study_assign, study_create, study_open
from tests.conftest import wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_a_study_is_prepared_by_the_worker_and_read(transactional_db, study_index, study_admin, readers,
                                                   celery_worker_process):
    study = study_create(user=study_admin, name="Worker study", cases_per_reader=3)  # autocommit: sent at once
    prepared = wait_for(lambda: Study.objects.filter(id=study.id).exclude(status=Study.Status.PREPARING).first(),
                        timeout=120, what="the worker to prepare the study")
    assert prepared.status == Study.Status.DRAFT, prepared.message
    assert prepared.index_version_id == study_index.id and prepared.preparation.attempts == 1
    assert StudyCase.objects.filter(study=study).count() == prepared.curation["query_set"] > 0
    study_assign(study=prepared, readers=readers[:1])
    study_open(study=prepared)
    assignment = prepared.assignments.get()
    answer, created = answer_submit(assignment=assignment, task=1, position=1, answer="nv", confidence=3)
    assert created and Answer.objects.count() == 1
