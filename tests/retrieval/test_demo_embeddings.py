"""prepare_demo's embeddings (issue 17): the contrastive and triplet models are trained by the
worker in the background and added to the active index one after the other, without re-encoding
it; meanwhile the methods read "being prepared" on the search page and in /api/v1/methods/."""
from __future__ import annotations

from io import StringIO
from types import SimpleNamespace

import pytest

from retrieval import runtime, selectors
from retrieval.models import IndexVersion, ModelVersion, TrainingJob
from retrieval.services.training import training_run
from tests.apiclient import api
from tests.conftest import run_index_build_here

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _states() -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["state"], m["preparation"]) for m in selectors.retrieval_methods()}


def _finish_training(job: TrainingJob) -> None:
    while job.status not in ("done", "failed"):
        training_run(job_id=job.id, worker="trainer", enqueue_next=False)
        job.refresh_from_db()
    assert job.status == "done", job.message


def _finish_build(build_id: int) -> IndexVersion:
    build = run_index_build_here(IndexVersion.objects.get(id=build_id), worker="worker")
    assert build.status == "done", build.message
    return build


def test_the_demo_embeddings_are_trained_in_the_background_and_added_to_the_index(
        ready_index, tiny_models, clinician, sent_jobs, django_capture_on_commit_callbacks):
    from retrieval.management.commands.prepare_demo import Command

    demo = SimpleNamespace(name="demo", config="tiny")  # the demo profile's epochs, on the tiny config
    command = Command(stdout=StringIO())
    with django_capture_on_commit_callbacks(execute=True):
        command._embeddings(demo, tiny_models["4ch"], "cpu", 0)
    contrastive, triplet = (TrainingJob.objects.get(stage=stage) for stage in ("contrastive", "triplet"))
    assert sent_jobs["training"] == [contrastive.id, triplet.id]
    assert contrastive.request["parent"] == tiny_models["3ch"].id and contrastive.total == 3  # demo: 3 epochs
    assert "training job" in command.stdout.getvalue()
    states = _states()
    assert states["secbir"] == ("available", "") and states["i1_sd"][0] == "available"
    assert states["contrastive"] == ("being prepared", "its contrastive model is being trained (epoch 0 of 3)")
    assert states["triplet"][0] == "being prepared"
    served = {m["name"]: m for m in api(clinician).get("/api/v1/methods/").json()}
    assert served["triplet"]["state"] == "being prepared" and served["triplet"]["available"] is False
    page = _search_page(clinician)
    assert "(being prepared: its triplet model is being trained (epoch 0 of 3))" in page

    with django_capture_on_commit_callbacks(execute=True):
        command._embeddings(demo, tiny_models["4ch"], "cpu", 0)  # a later run queues nothing more
    assert TrainingJob.objects.count() == 2 and len(sent_jobs["training"]) == 2

    commits = django_capture_on_commit_callbacks  # what a worker's commits send, sent at once here
    with commits(execute=True):
        _finish_training(contrastive)  # once trained: a build that adds it to the index
    (adding,) = sent_jobs["index_build"]
    assert IndexVersion.objects.get(id=adding).descriptors["adds"] == ["contrastive"]
    assert _states()["contrastive"] == ("being prepared", "being added to the case library index")
    with commits(execute=True):
        _finish_training(triplet)  # trained while that build is under way: no second build yet
    assert sent_jobs["index_build"] == [adding]

    runtime.forget()
    with commits(execute=True):
        first = _finish_build(adding)
    assert first.active and "contrastive" in first.methods and "triplet" not in first.methods
    (_, second) = sent_jobs["index_build"]  # the build that finished added what arrived meanwhile
    assert IndexVersion.objects.get(id=second).descriptors["adds"] == ["triplet"]
    with commits(execute=True):
        final = _finish_build(second)
    runtime.forget()
    assert final.active and len(final.methods) == 13 and final.base == first
    assert all(state == ("available", "") for state in _states().values())
    command._embeddings(demo, tiny_models["4ch"], "cpu", 0)  # a later run: nothing to do, and it says so
    assert command.stdout.getvalue().rstrip().endswith(f"both are served by index #{final.id}")
    assert ModelVersion.objects.filter(stage__in=["contrastive", "triplet"]).count() == 2


def _search_page(user) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.get("/search/").content.decode()
