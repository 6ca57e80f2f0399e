"""Training as a background job: train_model --queue and the admin queue a TrainingJob that the
worker's task runs one epoch per run (progress per epoch), resumes from its last checkpoint after
a takeover, and registers each stage's model; a worker that lost its job writes nothing."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from lesionsearch.jobs import services as jobs
from retrieval.models import ModelVersion, TrainingJob
from retrieval.services.training import training_run, training_work_dir
from retrieval.tasks import TRAINING

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SMALL_LIBRARY_SIZE = 40  # images: fast epochs, tuples of every class for the embeddings
TINY = ["--config", "tiny", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture
def queue(django_capture_on_commit_callbacks):
    """``train_model --queue`` with the tiny config; the job's message is sent as at a commit (each
    test is one transaction)."""
    def queue(*args) -> TrainingJob:
        out = StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("train_model", "--queue", *TINY, *args, stdout=out, verbosity=0)
        job = TrainingJob.objects.get()
        assert f"Queued training job {job.id}" in out.getvalue()
        return job

    return queue


def _run(job: TrainingJob, worker: str = "w1") -> TrainingJob:
    training_run(job_id=job.id, worker=worker, enqueue_next=False)
    job.refresh_from_db()
    return job


def _spy(monkeypatch, module, name: str) -> list[dict]:
    """Record the keyword arguments of every call of a training loop (its public function)."""
    calls: list[dict] = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_a_queued_training_runs_an_epoch_per_run_with_progress_and_registers_both_stages(
        small_library, media_root, sent_jobs, queue):
    job = queue("--stage", "both", "--epochs", "2")
    assert (job.status, job.done, job.total, job.config, job.stage) == ("pending", 0, 4, "tiny", "both")
    assert sent_jobs["training"] == [job.id]
    assert "tiny on 'synthetic', profile thesis: 3ch 2 epochs, 4ch 2 epochs" in job.message

    seen = []
    while job.status != "done":
        job = _run(job)
        seen.append((job.status, job.done, job.message.split(":")[0]))
        assert len(seen) <= 4, seen
    assert seen == [("running", 1, "3ch epoch 1 of 2"), ("running", 2, "3ch epoch 2 of 2"),
                    ("running", 3, "4ch epoch 1 of 2"), ("done", 4, job.message)]
    rgb, wide = ModelVersion.objects.get(stage="3ch"), ModelVersion.objects.get(stage="4ch")
    assert job.message == f"Trained tiny 3ch #{rgb.id}, tiny 4ch #{wide.id}."
    assert wide.parent == rgb and set(job.model_versions.all()) == {rgb, wide}
    assert [len(v.metrics["history"]) for v in (rgb, wide)] == [2, 2]
    assert job.attempts == 1 and job.worker == "w1" and job.finished_at is not None
    assert not training_work_dir(job).exists()  # the checkpoints in between are gone; the models are stored

    out = StringIO()
    call_command("train_model", "--status", str(job.id), stdout=out)
    assert f"Training job {job.id} (tiny both on 'synthetic'): done, 4 of 4 epochs" in out.getvalue()


def test_a_training_taken_over_from_a_dead_worker_resumes_from_its_last_checkpoint(
        small_library, media_root, sent_jobs, monkeypatch, queue):
    from retrieval.ml import train

    calls = _spy(monkeypatch, train, "train_stage")
    job = _run(queue("--stage", "3ch", "--epochs", "3"))
    assert job.done == 1 and calls[0]["resume"] is None
    # w1 claims the second epoch and dies: RUNNING, its heartbeat stops.
    TrainingJob.objects.filter(id=job.id).update(worker="w1", heartbeat_at=timezone.now() - timedelta(hours=1))
    job = _run(job, worker="w2")  # the takeover: one more attempt, and the epoch it lost is trained again
    assert (job.attempts, job.worker, job.done, job.status) == (2, "w2", 2, "running")
    assert calls[1]["resume"] == training_work_dir(job) / "3ch-last.pt"
    assert "resumed from its checkpoint" not in job.message  # the message is the epoch's result now
    job = _run(job, worker="w2")
    assert job.status == "done", job.message
    history = ModelVersion.objects.get(stage="3ch").metrics["history"]
    assert [epoch["epoch"] for epoch in history] == [1, 2, 3]  # each epoch once: resumed, not restarted


def test_an_embedding_job_resumes_each_epoch_from_the_last(small_library, media_root, sent_jobs, monkeypatch, queue):
    from retrieval.ml import embedding

    calls = _spy(monkeypatch, embedding, "train_embedding")
    job = queue("--stage", "triplet", "--epochs", "2", "--margin", "0.5")
    job = _run(_run(job))
    assert job.status == "done", job.message
    assert [call["resume"] for call in calls] == [None, training_work_dir(job) / "triplet-last.pt"]
    version = ModelVersion.objects.get(stage="triplet")
    assert [epoch["epoch"] for epoch in version.metrics["history"]] == [1, 2]
    assert version.metrics["margin"] == 0.5 and list(job.model_versions.all()) == [version]


def test_a_worker_that_lost_its_job_mid_epoch_writes_nothing(small_library, media_root, sent_jobs, monkeypatch, queue):
    from retrieval.ml import train

    job = queue("--stage", "3ch", "--epochs", "1")
    real = train.train_stage

    def stopped_meanwhile(*args, **kwargs):
        jobs.fail(TRAINING, job.id, "Stopped by an administrator.")  # while w1 trains
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_stage", stopped_meanwhile)
    assert training_run(job_id=job.id, worker="w1", enqueue_next=False) is False
    job.refresh_from_db()
    assert (job.status, job.message, job.done) == ("failed", "Stopped by an administrator.", 0)
    assert not ModelVersion.objects.exists() and not job.model_versions.exists()


def test_bad_requests_are_refused_before_anything_is_queued(small_library, sent_jobs):
    for args, message in ((["--stage", "4ch"], "no 3-channel tiny model for 'synthetic'; train --stage 3ch first"),
                          (["--stage", "3ch", "--margin", "1"], "--margin and --add-to-index are options of --stage contrastive"),
                          (["--stage", "triplet", "--stem-init", "zero"], "are options of the 4-channel stage"),
                          (["--epochs", "0"], "--epochs and --batch-size must be at least 1")):
        with pytest.raises(CommandError, match=message):
            call_command("train_model", "--queue", *TINY, *args, verbosity=0)
    with pytest.raises(CommandError, match="--add-to-index is for a queued training"):
        call_command("train_model", *TINY, "--stage", "triplet", "--add-to-index", verbosity=0)
    with pytest.raises(CommandError, match="a queued training resumes by itself"):
        call_command("train_model", "--queue", "--resume", __file__, verbosity=0)
    with pytest.raises(CommandError, match="no training job 999"):
        call_command("train_model", "--status", "999")
    assert not TrainingJob.objects.exists() and not sent_jobs["training"]


def test_the_admin_queues_a_training_and_shows_its_progress(admin_client, admin_user, small_library, sent_jobs,
                                                           django_capture_on_commit_callbacks):
    form = {"profile": "demo", "stage": "3ch", "config": "tiny", "collection": "", "epochs": "1",
            "batch_size": "8", "seed": "0", "parent": ""}
    refused = admin_client.post("/admin/retrieval/trainingjob/add/", {**form, "stage": "4ch"})
    assert refused.status_code == 200 and "no 3-channel tiny model" in refused.content.decode()
    assert not TrainingJob.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/retrieval/trainingjob/add/", form, follow=True)
    job = TrainingJob.objects.get()
    assert response.status_code == 200 and f"Queued training job {job.id}" in response.content.decode()
    assert (job.requested_by, job.request["profile"], job.request["epochs"], job.total) == (admin_user, "demo", 1, 1)
    assert sent_jobs["training"] == [job.id]
    _run(job)
    page = admin_client.get(f"/admin/retrieval/trainingjob/{job.id}/change/").content.decode()
    assert "Trained tiny 3ch" in page and "1 / 1" in page
    listing = admin_client.get("/admin/retrieval/trainingjob/").content.decode()
    assert "done" in listing
