"""Celery tasks: thin wrappers that take ids and call services."""
from __future__ import annotations

from lesionsearch.celery import light_task


@light_task(bind=True, name="retrieval.library_check_run")
def library_check_run_task(self, check_id: int) -> None:
    from retrieval.services import library_check_run

    library_check_run(check_id=check_id, worker=self.request.hostname or "")
