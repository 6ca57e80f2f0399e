"""Celery tasks (thin wrappers that take a job's id and call its service: ``jobs.kinds.job_task``) and their job kinds
(``lesionsearch.jobs``; registered in ``RetrievalConfig.ready``)."""
from __future__ import annotations

from django.conf import settings

from lesionsearch.celery import light_task, ml_task, training_task
from lesionsearch.jobs.kinds import JobKind, job_task
from retrieval.models import IndexVersion, LibraryCheck, Query, QueryEvidence, TrainingJob


library_check_run_task = job_task(light_task, "retrieval.library_check_run",
                                  "retrieval.services.library_check_run", "check_id")
query_run_task = job_task(ml_task, "retrieval.query_run", "retrieval.services.queries.query_run", "query_id")
evidence_run_task = job_task(ml_task, "retrieval.query_evidence_run", "retrieval.services.evidence.evidence_run",
                             "evidence_id")
index_build_task = job_task(ml_task, "retrieval.index_build_run", "retrieval.services.index.index_build_run",
                            "index_id")
training_run_task = job_task(training_task, "retrieval.training_run", "retrieval.services.training.training_run",
                             "job_id")


QUERY = JobKind(
    name="query", model=Query, task=query_run_task, label="query",
    fail_unclaimed_after=lambda: settings.QUERY_PENDING_FAIL_SECONDS,
    never_picked_up="The analysis service did not pick up this image; it may be stopped. "
                    "Please try again later or contact support.",
    interrupted="The analysis was interrupted several times and has been stopped. Please upload the image "
                "again; if it happens again, contact support.",
)
EVIDENCE = JobKind(
    name="query_evidence", model=QueryEvidence, task=evidence_run_task, label="query evidence maps",
    fail_unclaimed_after=lambda: settings.QUERY_PENDING_FAIL_SECONDS,
    never_picked_up="The analysis service did not compute the evidence maps; it may be stopped. The similar "
                    "cases are not affected.",
    interrupted="Computing the evidence maps was interrupted several times and has been stopped. The similar "
                "cases are not affected.",
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
JOB_KINDS = (QUERY, EVIDENCE, INDEX_BUILD, LIBRARY_CHECK, TRAINING)
