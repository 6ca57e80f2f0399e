"""Celery tasks of reader studies: thin wrappers that take ids and call services."""
from __future__ import annotations

from lesionsearch.celery import ml_task
from retrieval.tasks import _worker_name


@ml_task(bind=True, name="readerstudy.study_prepare")
def study_prepare_task(self, study_id: int) -> None:
    from readerstudy.services import study_prepare

    study_prepare(study_id=study_id, worker=_worker_name(self))
