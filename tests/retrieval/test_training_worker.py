"""A training job on a real worker process that is killed (-9) mid-epoch: the next worker takes the
job over by itself (its sweep; nobody polls) and resumes from the last epoch's checkpoint."""
from __future__ import annotations

import pytest
from django.core.management import call_command

from retrieval.models import ModelVersion, TrainingJob
from tests.conftest import kill_worker, start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

SMALL_LIBRARY_SIZE = 40


def test_a_training_killed_with_its_worker_resumes_on_the_next_from_its_last_checkpoint(
        transactional_db, django_db_serialized_rollback, small_library, media_root):
    env = {"JOB_STALE_SECONDS": "10", "JOB_SWEEP_SECONDS": "1"}
    log = media_root.parent / "worker.log"
    worker = start_worker(media_root, log=log, extra_env=env)
    try:
        call_command("train_model", "--queue", "--config", "tiny", "--stage", "3ch", "--epochs", "3",
                     "--batch-size", "8", "--device", "cpu", verbosity=0)  # autocommit: sent at once
        job = TrainingJob.objects.get()
        # Kill it while it trains the second epoch (it holds the job: the heartbeat is set).
        # (The run's own first progress says which epoch it trains: after epoch 1's progress and before
        # its release, the row also shows done=1 with a heartbeat, but the next run is already sent.)
        wait_for(lambda: TrainingJob.objects.filter(id=job.id, done=1, heartbeat_at__isnull=False,
                                                    message__startswith="3ch: training epoch 2").exists(),
                 timeout=120, interval=0.01, what="the worker to train epoch 1 and start epoch 2")
        kill_worker(worker)
        killed = TrainingJob.objects.get(id=job.id)
        assert (killed.status, killed.done, killed.attempts) == ("running", 1, 1)
        assert not ModelVersion.objects.exists()

        worker = start_worker(media_root, log=log, extra_env=env)
        finished = wait_for(lambda: TrainingJob.objects.filter(id=job.id, status__in=["done", "failed"]).first(),
                            timeout=240, interval=0.5, what="the training to resume and finish")
    finally:
        stop_worker(worker)
    assert finished.status == "done", finished.message
    assert finished.attempts == 2 and finished.done == finished.total == 3
    version = finished.model_versions.get()
    assert [epoch["epoch"] for epoch in version.metrics["history"]] == [1, 2, 3]
    assert "resuming tiny 3ch at epoch 2" in log.read_text()  # from epoch 1's checkpoint, not from scratch
