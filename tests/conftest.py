"""Shared fixtures: named actors, a private media folder, HAM10000-layout folders, a real worker."""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import Group
from PIL import Image

from lesionsearch.jobs import processes
from lesionsearch.roles import CLINICIAN, READER, STUDY_ADMIN

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """Every transactional test restores the database by serialized rollback. One plain flush
    re-creates the content types under new ids (PostgreSQL keeps its sequences), and every
    serialized test after it then fails to restore its own: an error that depends on the order
    the tests run in. Refuse such a test at collection instead."""
    plain = []
    for item in items:
        marker = item.get_closest_marker("django_db")
        marked = marker is not None and marker.kwargs.get("transaction")
        transactional = marked or {"transactional_db", "live_server"} & set(getattr(item, "fixturenames", ()))
        serialized = ((marker is not None and marker.kwargs.get("serialized_rollback"))
                      or "django_db_serialized_rollback" in getattr(item, "fixturenames", ()))
        if transactional and not serialized:
            plain.append(item.nodeid)
    if plain:
        raise pytest.UsageError("transactional tests without serialized rollback (add the "
                                "django_db_serialized_rollback fixture or serialized_rollback=True):\n  "
                                + "\n  ".join(plain))


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's private var folder (database, broker, media), unless a test failed."""
    import shutil

    from django.conf import settings

    folder = Path(settings.VAR_DIR)
    if exitstatus == 0 and folder.name.startswith("run-") and folder.parent == REPO / "var" / "test":
        shutil.rmtree(folder, ignore_errors=True)
REAL_METADATA = REPO.parent / "shared" / "data" / "HAM10000_metadata.csv"
SHIPPED_METADATA = REPO / "retrieval" / "data" / "HAM10000_metadata.csv"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Every test starts with an empty cache: throttle counts and sign-in failures are per user id
    and user name, which repeat from test to test."""
    from django.core.cache import cache

    cache.clear()


class SentJobs(dict):
    """Job ids the services sent to the broker, by kind name (``sent_jobs["query"]``)."""

    def __missing__(self, kind: str) -> list[int]:
        self[kind] = []
        return self[kind]


@pytest.fixture
def sent_jobs(monkeypatch) -> SentJobs:
    """Task messages of background jobs, recorded instead of sent (``lesionsearch.jobs.services.send``,
    the one place a job's task is sent): no worker runs, and nothing may reach the broker folder
    that a later test's real worker would read."""
    from lesionsearch.jobs import services

    sent = SentJobs()
    monkeypatch.setattr(services, "send", lambda kind, job_id, stamped=False: sent[kind.name].append(job_id))
    return sent


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def _user(django_user_model, name: str, role: str | None = None, **extra):
    user = django_user_model.objects.create_user(username=name, password="pw-" + name, **extra)
    if role:
        # get_or_create: a transactional test before this one flushed the groups of the data migration
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def signed_in(user):
    """A test client with ``user`` signed in (no password round trip)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def clinician(db, django_user_model):
    return _user(django_user_model, "dr_clinician", CLINICIAN)


@pytest.fixture
def reader(db, django_user_model):
    return _user(django_user_model, "a_reader", READER)


@pytest.fixture
def study_admin(db, django_user_model):
    return _user(django_user_model, "study_admin", STUDY_ADMIN, is_staff=True)


@pytest.fixture
def stranger(db, django_user_model):
    """Signed in, but in no role."""
    return _user(django_user_model, "stranger")


def jpeg_bytes(seed: int, size=(60, 45)) -> bytes:
    """A small, unique, valid JPEG."""
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    image.putpixel((seed % size[0], 0), (255 - (seed % 256), 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def real_metadata_rows(limit: int | None = None) -> list[dict[str, str]]:
    path = REAL_METADATA if REAL_METADATA.exists() else SHIPPED_METADATA
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:limit] if limit else rows


def write_ham_folder(folder: Path, rows: list[dict[str, str]], *, extra_lines: list[str] = ()) -> Path:
    """A folder in the real HAM10000 layout: CSV + JPEGs split over two part folders."""
    parts = [folder / "HAM10000_images_part_1", folder / "HAM10000_images_part_2"]
    for part in parts:
        part.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0].keys()) if rows else ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    metadata = folder / "HAM10000_metadata.csv"
    with open(metadata, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow(row)
            (parts[i % 2] / f"{row['image_id']}.jpg").write_bytes(jpeg_bytes(i))
        for line in extra_lines:
            handle.write(line + "\n")
    return metadata


def start_worker(media_root: Path, *, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a real Celery worker process on the test database, media folder and broker; wait until ready."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "MEDIA_ROOT": str(media_root),
           "DJANGO_SETTINGS_MODULE": "lesionsearch.settings", "LOG_LEVEL": "info", **(extra_env or {})}
    try:
        return processes.start_worker(env=env, log=log, hostname=f"test-{os.getpid()}@%h", timeout=60)
    except processes.WorkerDidNotStart as error:
        pytest.fail(str(error))


def stop_worker(process: subprocess.Popen) -> None:
    processes.stop_process(process, timeout=20)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_worker(process) -> None:
    """kill -9 a worker: its main process and its pool processes at once (an orphaned pool process
    would otherwise go on and finish the task in hand)."""
    pids = [process.pid] + _descendants(process.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    wait_for(lambda: not any(_running(pid) for pid in pids[1:]), timeout=10, interval=0.05,
             what="the pool processes to die")


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (killed pool processes are reaped by init)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def celery_worker_process(transactional_db, django_db_serialized_rollback, media_root):
    """A real Celery worker process on the test database, media folder and broker.

    Tasks reach it through the configured broker (the filesystem broker on the embedded
    default, Redis in the services run); it sees committed rows only, hence transactional_db.
    Serialized rollback, as every transactional test here: a plain flush re-creates the content
    types under new ids, and the next test with serialized rollback then fails to restore its own
    (an IntegrityError that depends on the order the tests run in).
    """
    process = start_worker(media_root, log=media_root.parent / "worker.log")
    yield process
    stop_worker(process)


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- A small, real index: synthetic images, tiny random-init models trained briefly ---------

LIBRARY_SIZE = 48


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """Rendered synthetic library folder + trained tiny 3-/4-channel checkpoints, made once per session."""
    from retrieval import synthetic
    from retrieval.classes import CODES
    from retrieval.ml.configs import get_config
    from retrieval.ml.data import Item
    from retrieval.ml.train import TrainOptions, train_stage

    root = tmp_path_factory.mktemp("tiny-assets")
    rows = synthetic.select_rows(synthetic.read_rows(SHIPPED_METADATA), LIBRARY_SIZE, seed=3)
    metadata = synthetic.write_library(rows, root / "library", seed=3, workers=1)
    folder = metadata.parent
    items = [Item(str(next(folder.glob(f"HAM10000_images_part_*/{row['image_id']}.jpg"))), CODES.index(row["dx"]),
                  row["image_id"]) for row in rows]
    train, val = items[: len(items) * 3 // 4], items[len(items) * 3 // 4:]
    options = TrainOptions(epochs=1, batch_size=8, seed=0, device="cpu", lr=3e-4, progress=False)
    config = get_config("tiny")
    rgb = train_stage("3ch", config, train, val, root / "train", options=options)
    wide = train_stage("4ch", config, train, val, root / "train", options=options, parent_checkpoint=rgb.checkpoint)
    return {"metadata": metadata, "folder": folder, "rgb": rgb, "wide": wide, "train": train, "val": val}


@pytest.fixture(scope="session")
def tiny_method_assets(tiny_assets):
    """Tiny contrastive and triplet embeddings and a small learned segmenter (one epoch each) on the
    tiny library, made once per session: what the other retrieval methods need besides SE-CBIR."""
    from PIL import Image

    from retrieval.ml.configs import get_config
    from retrieval.ml.embedding import train_embedding
    from retrieval.ml.segmentation import resize_mask, segmentation_input, train_segmentation
    from retrieval.ml.train import TrainOptions

    root = tiny_assets["folder"].parent / "methods"
    options = TrainOptions(epochs=1, batch_size=8, seed=0, device="cpu", lr=5e-3, progress=False)
    assets = {stage: train_embedding(stage, get_config("tiny"), tiny_assets["train"], tiny_assets["val"],
                                     root / stage, options=options)
              for stage in ("contrastive", "triplet")}

    def pairs(items):
        out = []
        for item in items:
            image_id = Path(item.path).stem
            with Image.open(item.path) as image, \
                    Image.open(tiny_assets["folder"] / "masks" / f"{image_id}_segmentation.png") as mask:
                out.append((segmentation_input(np.asarray(image.convert("RGB"))),
                            resize_mask(np.asarray(mask.convert("L")))))
        return out

    path = root / "segmentation.pt"
    metrics = train_segmentation(pairs(tiny_assets["train"]), pairs(tiny_assets["val"]), epochs=1, out_path=path)
    assets["segmentation"] = (path, metrics)
    return assets


@pytest.fixture
def tiny_method_models(tiny_models, tiny_method_assets):
    """The tiny models plus registered contrastive, triplet and segmentation ModelVersions."""
    versions = dict(tiny_models)
    for stage in ("contrastive", "triplet", "segmentation"):
        asset = tiny_method_assets[stage]
        path, metrics = asset if stage == "segmentation" else (asset.checkpoint, asset.metrics)
        versions[stage] = register_checkpoint(path, stage=stage, metrics=metrics,
                                              config="unet-small" if stage == "segmentation" else "tiny")
    return versions


def register_checkpoint(path: Path, *, stage: str, metrics: dict, config: str = "tiny", parent=None):
    """A trained checkpoint stored in the media root and registered as a ModelVersion of the
    synthetic collection (as the training service registers one)."""
    from retrieval.ml.checkpoints import checkpoint_digest
    from retrieval.models import ModelVersion
    from retrieval.services.library import store_content_file

    digest = checkpoint_digest(path)
    name, _ = store_content_file("models", digest, "pt", path)
    return ModelVersion.objects.create(config=config, stage=stage, parent=parent, collection="synthetic",
                                       checkpoint=name, checkpoint_sha256=digest, data_fingerprint="test",
                                       metrics=metrics, epochs=1)


def import_tiny_library(tiny_assets) -> dict:
    """Import and split the tiny synthetic library and register the tiny 3-/4-channel models as
    ModelVersions (in the current database and media root); returns them by stage."""
    from django.core.management import call_command

    call_command("import_ham10000", str(tiny_assets["folder"]), "--metadata", str(tiny_assets["metadata"]),
                 "--collection", "synthetic", verbosity=0)
    call_command("split_library", "--collection", "synthetic", "--seed", "71", verbosity=0)
    versions = {}
    for stage, key in (("3ch", "rgb"), ("4ch", "wide")):
        result = tiny_assets[key]
        versions[stage] = register_checkpoint(result.checkpoint, stage=stage, metrics=result.metrics,
                                              parent=versions.get("3ch") if stage == "4ch" else None)
    return versions


@pytest.fixture
def tiny_models(db, media_root, tiny_assets):
    """The synthetic library imported and split, and the tiny models registered as ModelVersions."""
    return import_tiny_library(tiny_assets)


def build_index_here(**kwargs):
    """Request a build and run it to the end in this process (what a worker does, chunk by chunk)."""
    from retrieval.services.index import index_build_request

    return run_index_build_here(index_build_request(**kwargs))


def run_index_build_here(index, worker: str = "test"):
    """Run a requested build to its end in this process, chunk by chunk; the finished row."""
    from retrieval.models import IndexVersion
    from retrieval.services.index import index_build_run

    for _ in range(1000):
        index_build_run(index_id=index.id, worker=worker, enqueue_next=False)
        index.refresh_from_db()
        if index.status in (IndexVersion.Status.DONE, IndexVersion.Status.FAILED):
            return index
    raise AssertionError("index build did not finish")


def build_active_index_here(settings, model_version, *, chunk_size: int):
    """Build an index in-process in chunks of ``chunk_size`` with the runtime's caches cleared, and
    check that it finished and became the active one. Call ``runtime.forget()`` after the test."""
    from retrieval import runtime

    settings.INDEX_CHUNK_SIZE = chunk_size
    runtime.forget()
    index = build_index_here(model_version=model_version)
    assert index.status == "done" and index.active, index.message
    return index


@pytest.fixture
def ready_index(tiny_models, settings):
    """An active IndexVersion over the tiny library (built in-process, in chunks of 16)."""
    from retrieval import runtime

    yield build_active_index_here(settings, tiny_models["4ch"], chunk_size=16)
    runtime.forget()
