"""Celery tasks (thin wrappers that take a job's id and call its service: ``jobs.kinds.job_task``) and their job kinds
(``lesionsearch.jobs``; registered in ``RetrievalConfig.ready``)."""
from __future__ import annotations

from django.conf import settings

from lesionsearch.celery import light_task, ml_task, training_task
from lesionsearch.jobs.kinds import JobKind, job_task
from lesionsearch.jobs.models import UNFINISHED
from retrieval.models import IndexChunk, IndexVersion, LibraryCheck, Query, QueryEvidence, TrainingJob


library_check_run_task = job_task(light_task, "retrieval.library_check_run",
                                  "retrieval.services.library_check_run", "check_id")
query_run_task = job_task(ml_task, "retrieval.query_run", "retrieval.services.queries.query_run", "query_id")
evidence_run_task = job_task(ml_task, "retrieval.query_evidence_run", "retrieval.services.evidence.evidence_run",
                             "evidence_id")
index_build_task = job_task(ml_task, "retrieval.index_build_run", "retrieval.services.index.index_build_run",
                            "index_id")
index_chunk_task = job_task(ml_task, "retrieval.index_chunk_run", "retrieval.services.index.index_chunk_run",
                            "chunk_id")
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
def _fail_chunks_of_build(index_id: int, message: str) -> None:
    """A failed build stops its chunks that have not run (a running one finds the build failed)."""
    from lesionsearch.jobs import services as jobs

    for chunk_id in IndexChunk.objects.filter(index_id=index_id, status__in=UNFINISHED).values_list("id", flat=True):
        jobs.fail(INDEX_CHUNK, chunk_id, "The build this chunk belongs to failed.")


def _fail_build_of_chunk(chunk_id: int, message: str) -> None:
    """A chunk that cannot be encoded fails its build (with the chunk's reason)."""
    from lesionsearch.jobs import services as jobs

    found = IndexChunk.objects.filter(id=chunk_id).values_list("index_id", "number").first()
    if found is not None:
        jobs.fail(INDEX_BUILD, found[0], f"Chunk {found[1]} of the build failed: {message}")


INDEX_BUILD = JobKind(
    name="index_build", model=IndexVersion, task=index_build_task, label="index build", chunked=True,
    interrupted="The build was interrupted several times (its worker stopped); giving up.",
    on_fail=_fail_chunks_of_build,
)
INDEX_CHUNK = JobKind(
    name="index_chunk", model=IndexChunk, task=index_chunk_task, label="index build chunk",
    interrupted="This chunk of the build was interrupted several times (its worker stopped); giving up.",
    on_fail=_fail_build_of_chunk,
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
JOB_KINDS = (QUERY, EVIDENCE, INDEX_BUILD, INDEX_CHUNK, LIBRARY_CHECK, TRAINING)
