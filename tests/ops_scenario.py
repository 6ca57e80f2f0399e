"""A scenario for the operations page and /metrics, on real rows: a live worker running a
training, a worker that stopped beating, failed library checks (one recent), a 3-channel and a
triplet model, an active index with a file on disk, and finished queries of known latency."""
from __future__ import annotations

from datetime import timedelta

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from lesionsearch.jobs.models import WorkerBeat
from retrieval.models import IndexVersion, LibraryCheck, ModelVersion, Query, TrainingJob
from tests.conftest import jpeg_bytes


def _beat(hostname: str, age: float, **extra) -> WorkerBeat:
    now = timezone.now()
    return WorkerBeat.objects.create(name=f"{hostname}:1", hostname=hostname, pid=1, queues=["inference", "light"],
                                     started_at=now - timedelta(hours=1), beat_at=now - timedelta(seconds=age),
                                     **extra)


def _query(user, status: str, seconds: float) -> Query:
    name = default_storage.save("queries/q.jpg", ContentFile(jpeg_bytes(3)))
    query = Query.objects.create(user=user, image=name, status=status, width=60, height=45)
    created = timezone.now() - timedelta(minutes=5)
    Query.objects.filter(id=query.id).update(created_at=created, finished_at=created + timedelta(seconds=seconds))
    return query


def make_operations(clinician, settings) -> dict:
    """A live worker running a training, a worker that stopped beating, a failed library check,
    a 3-channel and a triplet model, a done index, and finished queries of known latency."""
    settings.JOB_SWEEP_SECONDS = 30
    _beat("worker@alive", age=5)
    _beat("worker@gone", age=3600)
    training = TrainingJob.objects.create(config="tiny", collection="synthetic", stage="both", status="running",
                                          worker="worker@alive:77", heartbeat_at=timezone.now(), done=3, total=4,
                                          attempts=1, message="4ch epoch 1 of 2: validation macro sensitivity 0.5")
    LibraryCheck.objects.create(collection="synthetic", status="failed", finished_at=timezone.now(),
                                message="The check was interrupted several times")
    LibraryCheck.objects.create(collection="synthetic", status="failed",
                                finished_at=timezone.now() - timedelta(days=3), message="long ago")
    rgb = ModelVersion.objects.create(config="tiny", stage="3ch", collection="synthetic", checkpoint="models/a.pt",
                                      checkpoint_sha256="a" * 64, data_fingerprint="f", epochs=2,
                                      metrics={"accuracy": 0.75, "macro_sensitivity": 0.5})
    ModelVersion.objects.create(config="tiny", stage="triplet", collection="synthetic", checkpoint="models/t.pt",
                                checkpoint_sha256="t" * 64, data_fingerprint="f", epochs=3,
                                metrics={"ap_at_6": 0.41, "precision_at_1": 0.6, "precision_at_6": 0.4})
    wide = ModelVersion.objects.create(config="tiny", stage="4ch", parent=rgb, collection="synthetic",
                                       checkpoint="models/b.pt", checkpoint_sha256="b" * 64, data_fingerprint="f")
    index = IndexVersion.objects.create(model_version=wide, collection="synthetic", status="done", active=True,
                                        size=61, dimension=8, total=61, done=61,
                                        methods=["secbir", "cnn3"], finished_at=timezone.now())
    # Its folder is named by its id, as a build names it (the id is not 1 when earlier tests
    # committed index rows: the ops page finds the folder's size by the id).
    index.directory = f"indexes/{index.id}"
    index.save(update_fields=["directory"])
    default_storage.save(f"{index.directory}/features.npy", ContentFile(b"x" * 2048))
    for status, seconds in (("done", 0.3), ("done", 2.0), ("failed", 100.0)):
        _query(clinician, status, seconds)
    return {"training": training, "index": index}
