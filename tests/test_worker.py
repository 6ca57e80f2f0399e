"""Work pushed through the configured broker to a real Celery worker process.

On the embedded default this is the filesystem broker and the SQLite test database; in the
services run (`make test-services`) it is Redis and PostgreSQL.
"""
from __future__ import annotations

import pytest
from django.core.management import call_command

from lesionsearch.jobs.models import WorkerBeat
from retrieval.models import Case, LibraryCheck
from retrieval.services import library_check_request
from tests.conftest import real_metadata_rows, wait_for, write_ham_folder

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_the_worker_runs_below_the_web_tier_s_cpu_priority(celery_worker_process, settings):
    """Inference yields the CPU to page and API reads on a shared machine (WORKER_NICE)."""
    import os

    assert settings.WORKER_NICE == 10
    web = os.getpriority(os.PRIO_PROCESS, 0)
    worker = os.getpriority(os.PRIO_PROCESS, celery_worker_process.pid)
    assert worker == min(web + settings.WORKER_NICE, 19)
    pool = [int(pid) for pid in open(f"/proc/{celery_worker_process.pid}/task/{celery_worker_process.pid}/children")
            .read().split()]
    assert pool and all(os.getpriority(os.PRIO_PROCESS, pid) == worker for pid in pool)  # forked after it


def test_library_check_runs_on_the_worker_and_finds_a_damaged_file(celery_worker_process, tmp_path, media_root):
    write_ham_folder(tmp_path / "ham", real_metadata_rows(8))
    call_command("import_ham10000", str(tmp_path / "ham"), verbosity=0)
    damaged = Case.objects.order_by("image_id").first()
    (media_root / damaged.image.name).write_bytes(b"overwritten")

    check = library_check_request(collection="ham10000")  # autocommit: enqueued at once

    finished = wait_for(lambda: LibraryCheck.objects.filter(id=check.id, status__in=["done", "failed"]).first(),
                        timeout=90, what="the worker to finish the library check")
    assert finished.status == "done", finished.message
    assert finished.worker.startswith("test-")  # run by the worker process, not in this process
    beat = WorkerBeat.objects.get(stopped_at__isnull=True)  # its sign of life, for /ops/ and /metrics
    assert finished.worker.startswith(beat.hostname) and beat.queues == ["inference", "light", "training"]
    assert (finished.done, finished.total) == (8, 8)
    assert finished.problems == [{"case": damaged.id, "image_id": damaged.image_id,
                                  "problem": "image file changed since import (sha256 differs)"}]


def test_a_redelivered_check_does_nothing_twice(celery_worker_process, tmp_path, media_root):
    from retrieval.tasks import library_check_run_task

    write_ham_folder(tmp_path / "ham", real_metadata_rows(3))
    call_command("import_ham10000", str(tmp_path / "ham"), verbosity=0)
    check = library_check_request(collection="ham10000")
    wait_for(lambda: LibraryCheck.objects.filter(id=check.id, status="done").exists(), timeout=90, what="first run")
    first = LibraryCheck.objects.get(id=check.id)

    library_check_run_task.delay(check.id)  # a duplicate delivery of the same job
    marker = library_check_request(collection="ham10000")  # queued behind it on the same worker
    wait_for(lambda: LibraryCheck.objects.filter(id=marker.id, status="done").exists(), timeout=90, what="marker")

    again = LibraryCheck.objects.get(id=check.id)
    assert (again.started_at, again.finished_at, again.done) == (first.started_at, first.finished_at, first.done)
