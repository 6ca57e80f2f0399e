"""Celery tasks: thin wrappers that take a job's id and call its service, and their job kinds
(``lesionsearch.jobs``; registered in ``RetrievalConfig.ready``)."""
from __future__ import annotations

from django.conf import settings

from lesionsearch.celery import light_task, ml_task, training_task
from lesionsearch.jobs.kinds import JobKind, worker_name
from retrieval.models import IndexVersion, LibraryCheck, Query, TrainingJob


@light_task(bind=True, name="retrieval.library_check_run")
def library_check_run_task(self, check_id: int) -> None:
    from retrieval.services import library_check_run

    library_check_run(check_id=check_id, worker=worker_name(self))


@ml_task(bind=True, name="retrieval.query_run")
def query_run_task(self, query_id: int) -> None:
    from retrieval.services.queries import query_run

    query_run(query_id=query_id, worker=worker_name(self))


@ml_task(bind=True, name="retrieval.index_build_run")
def index_build_task(self, index_id: int) -> None:
    from retrieval.services.index import index_build_run

    index_build_run(index_id=index_id, worker=worker_name(self))


@training_task(bind=True, name="retrieval.training_run")
def training_run_task(self, job_id: int) -> None:
    from retrieval.services.training import training_run

    training_run(job_id=job_id, worker=worker_name(self))


QUERY = JobKind(
    name="query", model=Query, task=query_run_task, label="query",
    fail_unclaimed_after=lambda: settings.QUERY_PENDING_FAIL_SECONDS,
    never_picked_up="The analysis service did not pick up this image; it may be stopped. "
                    "Please try again later or contact support.",
    interrupted="The analysis was interrupted several times and has been stopped. Please upload the image "
                "again; if it happens again, contact support.",
)
INDEX_BUILD = JobKind(
    name="index_build", model=IndexVersion, task=index_build_task, label="index build", chunked=True,
    interrupted="The build was interrupted several times (its worker stopped); giving up.",
)
LIBRARY_CHECK = JobKind(
    name="library_check", model=LibraryCheck, task=library_check_run_task, label="library check",
    interrupted="The check was interrupted several times (its worker stopped); giving up.",
)
TRAINING = JobKind(
    name="training", model=TrainingJob, task=training_run_task, label="training", chunked=True,
    interrupted="The training was interrupted several times (its worker stopped); giving up. Queue it again "
                "to start over.",
)
JOB_KINDS = (QUERY, INDEX_BUILD, LIBRARY_CHECK, TRAINING)
