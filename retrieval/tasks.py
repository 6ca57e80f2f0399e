"""Celery tasks: thin wrappers that take ids and call services."""
from __future__ import annotations

import os

from lesionsearch.celery import light_task, ml_task


@light_task(bind=True, name="retrieval.library_check_run")
def library_check_run_task(self, check_id: int) -> None:
    from retrieval.services import library_check_run

    library_check_run(check_id=check_id, worker=self.request.hostname or "")


@ml_task(bind=True, name="retrieval.query_run")
def query_run_task(self, query_id: int) -> None:
    from retrieval.services.queries import query_run

    query_run(query_id=query_id, worker=_worker_name(self))


@ml_task(bind=True, name="retrieval.index_build_run")
def index_build_task(self, index_id: int) -> None:
    from retrieval.services.index import index_build_run

    index_build_run(index_id=index_id, worker=_worker_name(self))


def _worker_name(task) -> str:
    """Host and process: claims must tell apart the pool processes of one worker."""
    return f"{task.request.hostname or 'worker'}:{os.getpid()}"
