"""Celery tasks of reader studies (thin wrappers that take a job's id and call its service:
``jobs.kinds.job_task``) and their job kinds (``lesionsearch.jobs``; registered in ``ReaderStudyConfig.ready``)."""
from __future__ import annotations

from lesionsearch.celery import ml_task
from lesionsearch.jobs.kinds import JobKind, job_task
from readerstudy.models import StudyPreparation


study_prepare_task = job_task(ml_task, "readerstudy.study_prepare", "readerstudy.services.study_prepare_run",
                              "preparation_id")


def _fail_study(preparation_id: int, message: str) -> None:
    from readerstudy.services import study_preparation_failed

    study_preparation_failed(preparation_id=preparation_id, message=message)


STUDY_PREPARATION = JobKind(
    name="study_preparation", model=StudyPreparation, task=study_prepare_task, label="study preparation",
    interrupted="Preparing the study failed repeatedly (its worker stopped); see the worker log.",
    on_fail=_fail_study,
)
JOB_KINDS = (STUDY_PREPARATION,)
