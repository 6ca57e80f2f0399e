"""Building, extending and activating the retrieval index.

A build fans out over the workers. Its first run fixes the plan (which cases, in which order) in
``plan.npy`` and queues the first chunks of it as jobs of their own (``IndexChunk``,
``INDEX_CHUNKS_IN_FLIGHT`` at a time), which any free worker on the inference queue claims with a
conditional update, encodes (saliency for the case's true class, then every method's
descriptors), writes to its own ``chunk-NNNNN.npz`` atomically, and follows with the next chunk of
the plan. Chunks already on disk are never recomputed, so a build resumes where a killed worker
left it and running a task twice duplicates nothing. The last chunk sends the build again, whose
run assembles the matrices, calibrates the out-of-distribution warning
(:mod:`retrieval.services.ood`) and activates the version in one transaction; until then the
previous version keeps serving queries.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from lesionsearch.audit import services as audit
from lesionsearch.jobs import services as jobs
from retrieval import loaders, runtime
from retrieval.classes import CODES, TEST
from retrieval import methods as m
from retrieval.models import Case, IndexChunk, IndexVersion, ModelVersion
from retrieval.tasks import INDEX_BUILD, INDEX_CHUNK

logger = logging.getLogger(__name__)

Status = IndexVersion.Status
PLAN_FILE = "plan.npy"
#: Library cases whose raw style vectors fit the index's style projection (spread over the plan).
STYLE_FIT_SAMPLE = 512
#: ``IndexVersion.descriptors`` key: the class the library's saliency maps explain.
LIBRARY_SALIENCY_KEY = "library_saliency"
LIBRARY_TRUTH, LIBRARY_PREDICTED = "truth", "predicted"
LIBRARY_SALIENCY_CHOICES = (LIBRARY_TRUTH, LIBRARY_PREDICTED)
#: ``IndexVersion.descriptors`` key of a build that adds descriptors to its base (``index_methods_add``):
#: the descriptors it encodes; everything else (SE-CBIR vectors, saliency, the other descriptors,
#: the out-of-distribution calibration, overlays) is its base's.
ADDS_KEY = "adds"
#: Descriptors ``index_methods_add`` can add: the metric-learning embeddings, by their model's stage.
ADDABLE = {m.CONTRASTIVE: ModelVersion.Stage.CONTRASTIVE, m.TRIPLET: ModelVersion.Stage.TRIPLET}


class IndexBuildError(Exception):
    """A build cannot go on; the message is stored on the IndexVersion for administrators."""


def _latest_model(collection: str) -> ModelVersion | None:
    return (ModelVersion.objects.filter(stage=ModelVersion.Stage.RGB_SALIENCY, collection=collection)
            .select_related("parent").order_by("-created_at", "-id").first())


def _newest(stage: str, collection: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(stage=stage, collection=collection).order_by("-created_at", "-id").first()


def _checked_model(model: ModelVersion | None, stage: str, what: str) -> ModelVersion | None:
    if model is not None and model.stage != stage:
        raise ValueError(f"{model} is not a {what} model (stage {model.stage})")
    return model


def _segmentation_note(methods: list[str], segmentation_model: ModelVersion | None) -> dict:
    """Which lesion masks the Dice-based methods of an index compare (shown with the index)."""
    if not any(m.MASK in m.METHODS[name].needs for name in methods):
        return {}
    if segmentation_model is None:
        return {"segmentation": {"kind": "classical"}}
    return {"segmentation": {"kind": "learned", "model_version": segmentation_model.id,
                             "val_dice_mean": (segmentation_model.metrics or {}).get("val_dice_mean")}}


def index_build_request(*, user=None, model_version: ModelVersion | None = None, collection: str | None = None,
                        incremental: bool = False, extra_methods: bool = True,
                        contrastive_model: ModelVersion | None = None,
                        triplet_model: ModelVersion | None = None,
                        segmentation_model: ModelVersion | None = None,
                        library_saliency: str = LIBRARY_TRUTH) -> IndexVersion:
    """Create a pending build (or return the one already under way) and enqueue it on commit.

    ``model_version`` defaults to the newest 4-channel model of ``collection``; ``collection``
    to the model's (or the library's only one). ``incremental`` reuses the vectors of the active
    index of the same model and encodes only cases it does not hold yet (and its methods).

    With ``extra_methods`` (default) the index also serves the other retrieval methods
    (:mod:`retrieval.methods`): 3-channel features, style vectors and lesion masks (classical
    segmentation by default, or the learned ``segmentation_model``) for every case, and the
    contrastive and triplet embeddings of the given models (default: the collection's newest, when
    trained).

    ``library_saliency``: the library's saliency maps explain the ground-truth class (``truth``,
    the thesis) or the 3-channel model's predicted class (``predicted``, as for queries); recorded
    in ``descriptors["library_saliency"]``. An extension keeps its base's.
    """
    from retrieval.selectors import default_collection

    if library_saliency not in LIBRARY_SALIENCY_CHOICES:
        raise ValueError(f"library_saliency must be one of {', '.join(LIBRARY_SALIENCY_CHOICES)}")
    if model_version is not None:
        if model_version.stage != ModelVersion.Stage.RGB_SALIENCY:
            raise ValueError(f"{model_version} is a 3-channel model; an index needs a 4-channel (SE-CBIR) model")
        collection = collection or model_version.collection
    collection = collection or default_collection()
    model_version = model_version or _latest_model(collection)
    if model_version is None:
        raise ValueError(f"no trained 4-channel model for collection {collection!r}; run train_model first")
    if not Case.objects.in_library().filter(collection=collection).exclude(split=TEST).exists():
        raise ValueError(f"collection {collection!r} has no library cases to index")
    base = None
    if incremental:
        base = IndexVersion.objects.filter(collection=collection, active=True, model_version=model_version).first()
        if base is None:
            raise ValueError(f"there is no active index of {model_version} for {collection!r} to extend; "
                             "run a full build")
    contrastive_model = _checked_model(contrastive_model, ModelVersion.Stage.CONTRASTIVE, "contrastive")
    triplet_model = _checked_model(triplet_model, ModelVersion.Stage.TRIPLET, "triplet")
    segmentation_model = _checked_model(segmentation_model, ModelVersion.Stage.SEGMENTATION, "segmentation")
    if base is not None:  # an extension keeps its base's methods, so old and new rows compare
        library_saliency = (base.descriptors or {}).get(LIBRARY_SALIENCY_KEY, LIBRARY_TRUTH)
        methods = list(base.methods or [m.SECBIR])
        contrastive_model, triplet_model = base.contrastive_model, base.triplet_model
        segmentation_model = base.segmentation_model
    elif extra_methods:
        contrastive_model = contrastive_model or _newest(ModelVersion.Stage.CONTRASTIVE, collection)
        triplet_model = triplet_model or _newest(ModelVersion.Stage.TRIPLET, collection)
        descriptors = {m.SECBIR, m.CNN3, m.STYLE, m.MASK}
        descriptors |= {m.CONTRASTIVE} if contrastive_model else set()
        descriptors |= {m.TRIPLET} if triplet_model else set()
        methods = [name for name, method in m.METHODS.items() if set(method.needs) <= descriptors]
    else:
        methods, contrastive_model, triplet_model, segmentation_model = [m.SECBIR], None, None, None
    with transaction.atomic():
        under_way = (IndexVersion.objects.select_for_update()
                     .filter(collection=collection, model_version=model_version, status__in=[Status.PENDING,
                                                                                             Status.RUNNING])
                     .first())
        if under_way is not None:
            audit.record(audit.Action.INDEX_REBUILD, user=user, obj=under_way,
                         detail={"collection": collection, "model_version": model_version.id, "existing": True})
            return under_way
        index = IndexVersion.objects.create(model_version=model_version, collection=collection, base=base,
                                            methods=methods, contrastive_model=contrastive_model,
                                            triplet_model=triplet_model, segmentation_model=segmentation_model,
                                            descriptors={**_segmentation_note(methods, segmentation_model),
                                                         LIBRARY_SALIENCY_KEY: library_saliency},
                                            requested_by=user if user and user.is_authenticated else None)
        index.directory = f"indexes/{index.id}"
        index.save(update_fields=["directory"])
        audit.record(audit.Action.INDEX_REBUILD, user=user, obj=index,
                     detail={"collection": collection, "model_version": model_version.id, "existing": False,
                             "incremental": base is not None, "methods": methods,
                             "library_saliency": library_saliency})
        jobs.enqueue_on_commit(INDEX_BUILD, index.id)
    return index


def index_methods_add(*, user=None, collection: str | None = None, contrastive_model: ModelVersion | None = None,
                      triplet_model: ModelVersion | None = None) -> IndexVersion:
    """Add the contrastive and/or triplet embeddings to the collection's active index without
    re-encoding anything else: a build whose base is the active index, which encodes only the
    new descriptors of the base's cases and takes every other file from the base (SE-CBIR
    vectors, saliency, the other descriptors), its out-of-distribution calibration and overlays.
    It activates like any build; the base keeps serving until then.

    A given model must be of its stage and collection; without models, the collection's newest
    contrastive and triplet models that the index lacks are added. ``ValueError`` when there is
    nothing to add. Returns the build already under way for the same index, if any."""
    from retrieval.selectors import default_collection

    collection = collection or default_collection()
    base = IndexVersion.objects.filter(collection=collection, active=True, status=Status.DONE).first()
    if base is None:
        raise ValueError(f"collection {collection!r} has no active index to add methods to; build one first")
    given = {m.CONTRASTIVE: _checked_model(contrastive_model, ModelVersion.Stage.CONTRASTIVE, "contrastive"),
             m.TRIPLET: _checked_model(triplet_model, ModelVersion.Stage.TRIPLET, "triplet")}
    have = loaders.index_descriptors(base)
    if not any(given.values()):
        given = {name: _newest(stage, collection) for name, stage in ADDABLE.items() if name not in have}
    models = {name: model for name, model in given.items() if model is not None}
    for name, model in models.items():
        if model.collection != collection:
            raise ValueError(f"{model} was trained on {model.collection!r}, not {collection!r}")
    if not models:
        raise ValueError(f"the active index #{base.id} of {collection!r} already has every embedding there is "
                         "(train_model --stage contrastive|triplet first)")
    descriptors = have | set(models)
    methods = [name for name, method in m.METHODS.items() if set(method.needs) <= descriptors]
    with transaction.atomic():
        under_way = (IndexVersion.objects.select_for_update()
                     .filter(collection=collection, model_version=base.model_version,
                             status__in=[Status.PENDING, Status.RUNNING]).first())
        if under_way is not None:
            return under_way
        index = IndexVersion.objects.create(
            model_version=base.model_version, collection=collection, base=base, methods=methods,
            contrastive_model=models.get(m.CONTRASTIVE, base.contrastive_model),
            triplet_model=models.get(m.TRIPLET, base.triplet_model), segmentation_model=base.segmentation_model,
            descriptors={**(base.descriptors or {}), ADDS_KEY: sorted(models)},
            requested_by=user if user and user.is_authenticated else None)
        index.directory = f"indexes/{index.id}"
        index.save(update_fields=["directory"])
        audit.record(audit.Action.INDEX_REBUILD, user=user, obj=index,
                     detail={"collection": collection, "model_version": base.model_version_id, "existing": False,
                             "adds": sorted(models), "base": base.id, "methods": methods})
        jobs.enqueue_on_commit(INDEX_BUILD, index.id)
    return index


def _adds(index: IndexVersion) -> set[str]:
    """The descriptors a build adds to its base (empty: a full or incremental build)."""
    return set((index.descriptors or {}).get(ADDS_KEY) or []) if index.base_id else set()


def index_build_run(*, index_id: int, worker: str, enqueue_next: bool = True) -> bool:
    """One run of a build: claim it, keep its chunks going, or assemble it once they are done.

    The first run fixes the plan; every run then makes sure ``INDEX_CHUNKS_IN_FLIGHT`` chunks
    (``IndexChunk`` jobs) are queued, for whichever workers are free, and releases the build;
    the run that finds every chunk DONE (sent by the last chunk to finish, or by the sweep)
    assembles and activates the index. With ``enqueue_next`` false (``build_index --here``,
    tests) nothing is sent: the run encodes the next chunk itself, in this process. Returns
    whether this call did any work (False: finished, failed, held by a live worker, or every
    chunk is held by another live worker).
    """
    index = jobs.claim(INDEX_BUILD, index_id, worker)
    if index is None:
        logger.info("index build %s: nothing to do (finished, held by another worker or out of attempts)",
                    index_id)
        return False
    try:
        _plan(index, loaders.index_path(index))
        index.refresh_from_db()
        worked = True
        if not _all_chunks_done(index) and not enqueue_next:
            _top_up(index, in_flight=1, send=False)
            waiting = index.chunks.exclude(status=Status.DONE).order_by("number").values_list("id", flat=True)
            worked = any(index_chunk_run(chunk_id=chunk_id, worker=worker, enqueue_next=False) for chunk_id in waiting)
            index.refresh_from_db()
        if index.status != Status.RUNNING:  # a chunk failed, and failed the build with it
            return worked
        if _all_chunks_done(index):
            _finish(index, worker)
        elif jobs.release(INDEX_BUILD, index.id, worker) and enqueue_next:
            _top_up(index, in_flight=settings.INDEX_CHUNKS_IN_FLIGHT, send=True)
        return worked
    except IndexBuildError as exc:
        jobs.fail(INDEX_BUILD, index.id, str(exc))
    except Exception as exc:
        jobs.fail(INDEX_BUILD, index.id,
                  f"The build stopped because of an internal error: {exc.__class__.__name__}: {exc}")
        raise
    return True


def index_chunk_run(*, chunk_id: int, worker: str, enqueue_next: bool = True) -> bool:
    """Encode one chunk of a build (a job of its own, on any worker) and record the build's
    progress; then queue the next chunk, or send the build for its assembly when this was the
    last. A chunk whose file is on disk already (a redelivered message, a worker killed after
    writing it) is not encoded again. Returns whether this call did any work."""
    chunk = jobs.claim(INDEX_CHUNK, chunk_id, worker)
    if chunk is None:
        return False
    index = IndexVersion.objects.get(id=chunk.index_id)
    if index.status != Status.RUNNING:
        jobs.fail(INDEX_CHUNK, chunk.id, "The build this chunk belongs to is not running any more.", worker=worker)
        return True
    try:
        _encode_chunk(index, chunk)
    except IndexBuildError as exc:
        jobs.fail(INDEX_CHUNK, chunk.id, str(exc), worker=worker)
        return True
    except Exception as exc:
        jobs.fail(INDEX_CHUNK, chunk.id, f"internal error: {exc.__class__.__name__}: {exc}", worker=worker)
        raise
    if jobs.finish(INDEX_CHUNK, chunk.id, worker, done=chunk.cases, total=chunk.cases):
        done = sum(index.chunks.filter(status=Status.DONE).values_list("cases", flat=True))
        jobs.parts_progress(INDEX_BUILD, index.id, done=done)
        if enqueue_next:
            if done >= index.total:
                jobs.send(INDEX_BUILD, index.id)  # the assembly; two last chunks: one claim wins
            else:
                _top_up(index, in_flight=settings.INDEX_CHUNKS_IN_FLIGHT, send=True)
    return True


def _all_chunks_done(index: IndexVersion) -> bool:
    return sum(index.chunks.filter(status=Status.DONE).values_list("cases", flat=True)) >= index.total


def _top_up(index: IndexVersion, *, in_flight: int, send: bool) -> None:
    """Create (and with ``send``, queue) the plan's next chunks until ``in_flight`` are unfinished
    or the plan is covered. Chunk rows are created in plan order, one number at a time
    (``get_or_create`` on the unique (index, number)): of two workers topping up at once, each
    creates and sends different chunks, never the same one twice. Rows exist only for chunks
    that were queued, so the sweep re-sends only messages that were really sent and lost."""
    size = settings.INDEX_CHUNK_SIZE
    while True:
        rows = list(index.chunks.values_list("first", "cases", "status"))
        unfinished = sum(1 for _, _, status in rows if status in (Status.PENDING, Status.RUNNING))
        covered = max((first + cases for first, cases, _ in rows), default=0)
        if unfinished >= in_flight or covered >= index.total:
            return
        chunk, created = IndexChunk.objects.get_or_create(
            index=index, number=len(rows), defaults={"first": covered, "cases": min(size, index.total - covered)})
        if created and send:
            jobs.send(INDEX_CHUNK, chunk.id)


def _plan(index: IndexVersion, folder: Path) -> np.ndarray:
    path = folder / PLAN_FILE
    if path.exists():
        return np.load(path)
    cases = Case.objects.in_library().filter(collection=index.collection).exclude(split=TEST).order_by("id")
    ids = np.array(list(cases.values_list("id", flat=True)), dtype=np.int64)
    if index.base_id:
        base_ids = np.load(loaders.index_path(index.base) / loaders.CASE_IDS_FILE)
        # adding descriptors: every case of the base; extending: the cases the base lacks
        ids = base_ids if _adds(index) else np.setdiff1d(ids, base_ids)
    if not len(ids) and not index.base_id:
        raise IndexBuildError(f"collection {index.collection!r} has no library cases to index")
    folder.mkdir(parents=True, exist_ok=True)
    if m.STYLE in loaders.index_descriptors(index):
        _style_projection(index, folder, ids)
    _save_atomic(path, ids)
    IndexVersion.objects.filter(id=index.id).update(total=len(ids))
    return ids


def _style_projection(index: IndexVersion, folder: Path, ids: np.ndarray) -> None:
    """Fix the style projection before any chunk is encoded (an extension reuses its base's, so
    that old and new rows are comparable). Written once; a resumed plan step finds it."""
    target = folder / loaders.STYLE_PROJECTION_FILE
    if target.exists():
        return
    if index.base_id:
        shutil.copyfile(loaders.index_path(index.base) / loaders.STYLE_PROJECTION_FILE, target)
        return
    from retrieval.ml.measures import StyleProjection

    encoder = runtime.descriptor_encoder_for(index, with_style_projection=False)
    sample = ids[np.unique(np.linspace(0, len(ids) - 1, min(STYLE_FIT_SAMPLE, len(ids))).round().astype(int))]
    cases = Case.objects.in_bulk(sample.tolist())
    raw = []
    for start in range(0, len(sample), 32):
        images = []
        for case_id in sample[start:start + 32].tolist():
            try:
                images.append(loaders.load_rgb(cases[case_id].image.path))
            except (KeyError, OSError, ValueError):
                continue  # unreadable or deleted: the chunk that holds it will skip it
        if images:
            raw.append(encoder.raw_style(images))
    if not raw:
        raise IndexBuildError("no library image could be read to fit the style projection")
    projection = StyleProjection.fit(np.concatenate(raw), components=settings.STYLE_COMPONENTS)
    _save_atomic(target, **projection.to_arrays())
    IndexVersion.objects.filter(id=index.id).update(descriptors={
        **(index.descriptors or {}),
        "style": {"components": int(projection.components), "explained": round(float(projection.explained), 4),
                  "fit_sample": int(sum(len(r) for r in raw)),
                  "stages": encoder.style_extractor.describe()},
    })


def _save_atomic(path: Path, array: np.ndarray | None = None, **arrays) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        if arrays:
            np.savez(handle, **arrays)
        else:
            np.save(handle, array)
    os.replace(tmp, path)


def _chunk_path(folder: Path, number: int) -> Path:
    return folder / f"chunk-{number:05d}.npz"


def _encode_chunk(index: IndexVersion, chunk) -> None:
    """Encode the chunk's cases of the plan to its ``chunk-N.npz`` (written atomically), unless it
    is on disk already."""
    folder = loaders.index_path(index)
    path = _chunk_path(folder, chunk.number)
    if path.exists():
        return
    plan = np.load(folder / PLAN_FILE)
    ids = plan[chunk.first:chunk.first + chunk.cases]
    adds = _adds(index)
    descriptors, saliency, kept, skipped = encode_cases(index, [int(i) for i in ids], only=adds or None)
    if not adds:  # a build that adds descriptors keeps its base's saliency maps and overlays
        _render_overlays(index, kept, saliency)
    _save_atomic(path, saliency=saliency, case_ids=kept, skipped=np.array(skipped, dtype=np.int64), **descriptors)


def case_overlay_name(index_id: int, case_id: int) -> str:
    return f"overlays/index-{index_id}/{case_id}.png"


def _render_overlays(index: IndexVersion, case_ids: np.ndarray, saliency: np.ndarray) -> None:
    """Render the chunk's saliency overlays now, so that queries only read cached files."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from retrieval.ml.overlay import render_overlay

    sizes = dict((pk, (w, h)) for pk, w, h in Case.objects.filter(id__in=case_ids.tolist())
                 .values_list("id", "width", "height"))
    for case_id, heat in zip(case_ids.tolist(), saliency):
        name = case_overlay_name(index.id, case_id)
        if not default_storage.exists(name):
            saved = default_storage.save(name, ContentFile(render_overlay(heat, sizes[case_id])))
            if saved != name:  # another run rendered it at the same time
                default_storage.delete(saved)


def encode_cases(index: IndexVersion, ids: list[int], *, only: set[str] | None = None):
    """Descriptors {name: (n, ...)} (``secbir`` = the 4-channel features), uint8 saliency
    (n, S, S) and ids of the cases that could be read; skipped ids. ``only``: just these
    descriptors (no SE-CBIR pass, an empty saliency array), as a build that adds them does."""
    from retrieval.ml.overlay import to_uint8
    from retrieval.ml.saliency import saliency_batch_size

    encoder = runtime.descriptor_encoder_for(index)
    needs = set(only) if only else loaders.index_descriptors(index)
    # Library saliency maps explain the ground-truth class (the thesis) unless the build asked for
    # the predicted class (build_index --library-saliency predicted): then no label reaches the
    # library's SE-CBIR vectors, as for queries.
    use_labels = (index.descriptors or {}).get(LIBRARY_SALIENCY_KEY, LIBRARY_TRUTH) == LIBRARY_TRUTH
    size = encoder.size
    cases = Case.objects.in_bulk(ids)
    images, labels, kept, skipped = [], [], [], []
    for case_id in ids:
        case = cases.get(case_id)
        if case is None:  # deleted since the plan was made
            skipped.append(case_id)
            continue
        try:
            images.append(loaders.load_rgb(case.image.path))
        except (OSError, ValueError) as exc:
            logger.warning("index: case %s (%s) skipped, image unreadable: %s", case_id, case.image_id, exc)
            skipped.append(case_id)
            continue
        labels.append(CODES.index(case.dx))
        kept.append(case_id)
    if not images:
        empty = {name: np.zeros((0, 0), np.float32) for name in needs} if only else {
            m.SECBIR: np.zeros((0, encoder.encoder.config.feature_dim), np.float32)}
        return empty, np.zeros((0, size, size), np.uint8), np.array(kept, np.int64), skipped
    batch = saliency_batch_size(encoder.encoder.config.saliency_mb_per_image, encoder.device)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in needs}
    saliency = []
    for start in range(0, len(images), batch):
        encoded = encoder.encode(images[start:start + batch],
                                 np.array(labels[start:start + batch]) if use_labels else None, needs=needs)
        for name in needs:
            parts[name].append(encoded.descriptors[name])
        if encoded.secbir is not None:
            saliency.append(to_uint8(encoded.secbir.saliency))
    maps = np.concatenate(saliency) if saliency else np.zeros((0, size, size), np.uint8)
    return ({name: np.concatenate(rows) for name, rows in parts.items()}, maps, np.array(kept, np.int64), skipped)


def _assemble(index: IndexVersion, folder: Path) -> tuple[dict, np.ndarray, np.ndarray, list[int]]:
    """Every chunk (and the base's rows that still exist) concatenated: descriptors, saliency,
    case ids, skipped ids."""
    names = loaders.index_descriptors(index)
    if _adds(index):
        return _assemble_added(index, folder, names)
    parts = [p for p in (np.load(path) for path in sorted(folder.glob("chunk-*.npz"))) if len(p["case_ids"])]
    skipped = [int(i) for path in sorted(folder.glob("chunk-*.npz")) for i in np.load(path)["skipped"]]
    # (chunks written before the methods existed hold the SE-CBIR vectors as "features")
    descriptors = {name: [p[name] if name in p else p["features"] for p in parts] for name in names}
    saliency = [p["saliency"] for p in parts]
    case_ids = [p["case_ids"] for p in parts]
    if index.base_id:
        base = loaders.index_path(index.base)
        base_ids = np.load(base / loaders.CASE_IDS_FILE)
        alive = np.isin(base_ids, np.array(list(Case.objects.in_library().filter(id__in=base_ids.tolist())
                                                .values_list("id", flat=True)), dtype=np.int64))
        for name in names:
            descriptors[name].insert(0, np.load(base / loaders.descriptor_file(name), mmap_mode="r")[alive])
        saliency.insert(0, np.load(base / loaders.SALIENCY_FILE, mmap_mode="r")[alive])
        case_ids.insert(0, base_ids[alive])
    if not case_ids:
        raise IndexBuildError("no library image could be read; see the worker log")
    return ({name: np.concatenate(rows) for name, rows in descriptors.items()}, np.concatenate(saliency),
            np.concatenate(case_ids), skipped)


def _assemble_added(index: IndexVersion, folder: Path, names: set[str]):
    """A build that adds descriptors: the base's rows of the cases that still exist and whose
    images could be read again, the base's files for every descriptor it had, the chunks' for
    the added ones (the chunks follow the base's row order)."""
    base = loaders.index_path(index.base)
    base_ids = np.load(base / loaders.CASE_IDS_FILE)
    chunks = [np.load(path) for path in sorted(folder.glob("chunk-*.npz"))]
    skipped = [int(i) for chunk in chunks for i in chunk["skipped"]]
    encoded_ids = np.concatenate([chunk["case_ids"] for chunk in chunks]) if chunks else np.zeros(0, np.int64)
    alive = set(Case.objects.in_library().filter(id__in=encoded_ids.tolist()).values_list("id", flat=True))
    keep_encoded = np.isin(encoded_ids, np.array(sorted(alive), dtype=np.int64))
    rows = np.isin(base_ids, encoded_ids[keep_encoded])
    if not rows.any():
        raise IndexBuildError("no library image could be read; see the worker log")
    added = _adds(index)
    descriptors = {}
    for name in names:
        if name in added:
            descriptors[name] = np.concatenate([chunk[name] for chunk in chunks if len(chunk["case_ids"])])[
                keep_encoded]
        else:
            descriptors[name] = np.load(base / loaders.descriptor_file(name), mmap_mode="r")[rows]
    return descriptors, np.load(base / loaders.SALIENCY_FILE, mmap_mode="r")[rows], base_ids[rows], skipped


def _finish(index: IndexVersion, worker: str) -> None:
    from retrieval.ml.search import build_backend

    folder = loaders.index_path(index)
    descriptors, saliency, case_ids, skipped = _assemble(index, folder)
    features = descriptors[m.SECBIR]
    for name, rows in descriptors.items():
        _save_atomic(folder / loaders.descriptor_file(name), rows)
    _save_atomic(folder / loaders.SALIENCY_FILE, saliency)
    _save_atomic(folder / loaders.CASE_IDS_FILE, case_ids)
    if settings.SEARCH_BACKEND == "qdrant":
        # Written before the row is activated: the version's collection is complete before any
        # query can be sent to it, and the active version's keeps serving until then.
        from retrieval import runtime

        backend = loaders.write_qdrant_collection(index.id, runtime.qdrant_client(), features, case_ids)
    else:
        backend = build_backend(features, settings.SEARCH_BACKEND,
                                faiss_min_vectors=settings.SEARCH_FAISS_MIN_VECTORS)
    if backend.kind not in ("exact", "qdrant"):
        shutil.rmtree(folder / loaders.BACKEND_DIR, ignore_errors=True)
        backend.save(folder / loaders.BACKEND_DIR)
    base = index.base if _adds(index) else None
    if base is not None and len(case_ids) == base.size and base.calibration:
        calibration = base.calibration  # the same SE-CBIR vectors of the same cases: the same warning
        _copy_overlays(base, index)
    else:
        calibration = _calibrate(index, features, case_ids, backend, worker)
    with transaction.atomic():
        list(IndexVersion.objects.select_for_update().filter(collection=index.collection).values_list("id"))
        current = jobs.held(INDEX_BUILD, index.id, worker).first()
        if current is None:
            logger.info("index build %s finished or taken over elsewhere meanwhile", index.id)
            return
        IndexVersion.objects.filter(collection=index.collection, active=True).update(active=False)
        jobs.finish(INDEX_BUILD, index.id, worker, active=True, size=len(case_ids), dimension=features.shape[1],
                    done=current.total, calibration=calibration, skipped=skipped, activated_at=timezone.now(),
                    message=f"{len(case_ids)} cases indexed" + (f", {len(skipped)} skipped (unreadable or deleted)"
                                                                if skipped else "") + ".")
    for path in folder.glob("chunk-*.npz"):
        path.unlink(missing_ok=True)
    logger.info("index %s active: %s cases, dimension %s", index.id, len(case_ids), features.shape[1])
    if base is not None:
        _add_what_arrived_meanwhile(index)


def _add_what_arrived_meanwhile(index: IndexVersion) -> None:
    """After a build that added embeddings: an embedding trained while it ran (its request found
    this build under way) is added by one more build; nothing new, nothing queued."""
    try:
        build = index_methods_add(collection=index.collection)
    except ValueError:
        return
    logger.info("index %s: build #%s adds %s, trained meanwhile", index.id, build.id,
                ", ".join((build.descriptors or {}).get(ADDS_KEY) or []))


def _copy_overlays(base: IndexVersion, index: IndexVersion) -> None:
    """The base's rendered library overlays, for a build that keeps its saliency maps."""
    source = Path(settings.MEDIA_ROOT) / "overlays" / f"index-{base.id}"
    if source.is_dir():
        shutil.copytree(source, Path(settings.MEDIA_ROOT) / "overlays" / f"index-{index.id}", dirs_exist_ok=True)


def _calibrate(index: IndexVersion, features: np.ndarray, case_ids: np.ndarray, backend, worker: str) -> dict:
    """The out-of-distribution calibration of the new index (:func:`retrieval.services.ood.ood_calibrate`).

    Run by the last task of the build, which keeps its claim alive with a heartbeat per encoded
    batch; a worker that dies here leaves the build RUNNING, and the run that takes over
    assembles and calibrates again (nothing of it was stored). When no calibration can be
    computed the index is still activated, without a warning, and the record says why."""
    from retrieval.services.ood import VERSION, CalibrationError, ood_calibrate

    def tick() -> None:
        jobs.heartbeat(INDEX_BUILD, index.id, worker)

    try:
        return ood_calibrate(index=index, features=features, case_ids=case_ids, backend=backend, tick=tick)
    except CalibrationError as exc:
        logger.error("index build %s: no out-of-distribution calibration: %s", index.id, exc)
        return {"version": VERSION, "method": None, "threshold": None, "n": 0, "error": str(exc)}


def index_refresh(*, index: IndexVersion) -> IndexVersion:
    """Re-send a build whose task was lost or whose worker died; fail it after too many tries
    (``lesionsearch.jobs.services.refresh``; a dead worker's build is re-sent once per stale
    period, since every worker's sweep calls this and each message would start a chain of chunks)."""
    return jobs.refresh(INDEX_BUILD, index) if index.status in (Status.PENDING, Status.RUNNING) else index


def index_activate(*, index: IndexVersion, user=None) -> None:
    """Make a finished version the one that serves queries (e.g. roll back to an older one)."""
    if index.status != Status.DONE:
        raise ValueError(f"{index} is not finished; only a complete index can serve queries")
    with transaction.atomic():
        list(IndexVersion.objects.select_for_update().filter(collection=index.collection).values_list("id"))
        IndexVersion.objects.filter(collection=index.collection, active=True).update(active=False)
        IndexVersion.objects.filter(id=index.id).update(active=True, activated_at=timezone.now())
        audit.record(audit.Action.INDEX_ACTIVATE, user=user, obj=index, detail={"collection": index.collection})
