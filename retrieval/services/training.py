"""Training models on the case library: the SE-CBIR classifiers (3-channel, 4-channel) and the
metric-learning embeddings (contrastive, triplet), each registered as a ModelVersion.

Two ways in, one plan: ``training_plan`` reads a request (the options of ``train_model``, as a
dict) into what to train, refusing a bad request with a message that says why. ``train_model``
then trains in its own process (``model_train``, ``embedding_train``); ``train_model --queue``
and the admin queue a ``TrainingJob`` (``training_queue``) that the worker runs one epoch per
task run (``training_run``): progress per epoch on the job, and after a killed worker the job is
taken over and resumes from its last epoch's checkpoint.
"""
from __future__ import annotations

import csv
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from lesionsearch.jobs import services as jobs
from retrieval import selectors
from retrieval.models import Case, ModelVersion, TrainingJob
from retrieval.services.library import store_content_file
from retrieval.tasks import TRAINING

logger = logging.getLogger(__name__)

CLASSIFIER_STAGES = ("3ch", "4ch", "both")
EMBEDDING_STAGES = ("contrastive", "triplet")
REQUEST_STAGES = CLASSIFIER_STAGES + EMBEDDING_STAGES
#: request keys -> TrainOptions fields of the 4-channel stage
FOUR_CHANNEL_OPTIONS = {"saliency": "saliency", "ig_steps": "ig_steps", "ig_baseline": "ig_baseline",
                        "stem_init": "stem_init"}
#: every key a request may hold (``train_model``'s options), with its default
REQUEST_DEFAULTS = {
    "profile": None, "config": None, "stage": "both", "epochs": None, "batch_size": None, "device": None,
    "parent": None, "groups": None, "non_hierarchical": False, "margin": None, "collection": None, "seed": 0,
    "lr": None, "workers": 4, "saliency": None, "ig_steps": None, "ig_baseline": None, "stem_init": None,
    # contrastive/triplet, queued: once trained, add the embedding to the collection's active index
    "add_to_index": False,
}
#: seconds between two heartbeats of a training job (it beats after a batch, at most this often)
HEARTBEAT_SECONDS = 10


@dataclass
class TrainingPlan:
    """What a request trains: ``stages`` in order, their ``options`` ({stage: TrainOptions}), the
    3-channel ``parent`` a 4-channel stage or an embedding starts from, similarity ``groups``."""

    request: dict
    profile: str
    config: str
    collection: str
    stage: str
    stages: list[str]
    options: dict
    parent: ModelVersion | None = None
    groups: dict[str, str] | None = None
    hierarchical: bool = True
    margin: float | None = None

    @property
    def embedding(self) -> bool:
        return self.stage in EMBEDDING_STAGES

    @property
    def total_epochs(self) -> int:
        return sum(self.options[stage].epochs for stage in self.stages)


def training_plan(request: Mapping) -> TrainingPlan:
    """Read a request (``REQUEST_DEFAULTS``' keys) into a plan; ``ValueError`` saying what is wrong."""
    from retrieval.ml.configs import config_names
    from retrieval.ml.profiles import DEFAULT_PROFILE, get_profile

    unknown = sorted(set(request) - set(REQUEST_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
    o = {**REQUEST_DEFAULTS, **request}
    o["profile"] = o["profile"] or DEFAULT_PROFILE
    o["device"] = o["device"] or settings.TORCH_DEVICE
    if o["stage"] not in REQUEST_STAGES:
        raise ValueError(f"unknown stage {o['stage']!r}; use one of {', '.join(REQUEST_STAGES)}")
    if (o["epochs"] is not None and o["epochs"] < 1) or (o["batch_size"] is not None and o["batch_size"] < 1):
        raise ValueError("--epochs and --batch-size must be at least 1")
    try:
        profile = get_profile(o["profile"])
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    o["config"] = o["config"] or profile.config
    if o["config"] not in config_names():
        raise ValueError(f"unknown model config {o['config']!r}; known: {', '.join(config_names())}")
    o["collection"] = o["collection"] or selectors.default_collection()
    explicit = {key: o[key] for key in ("epochs", "batch_size") if o[key] is not None}
    common = {"seed": o["seed"], "device": o["device"], "num_workers": o["workers"], "lr": o["lr"], "progress": False,
              **explicit}
    if o["stage"] in EMBEDDING_STAGES:
        return _embedding_plan(o, profile, common)
    if o["groups"] or o["non_hierarchical"] or o["margin"] is not None or o["add_to_index"]:
        raise ValueError("--groups, --non-hierarchical, --margin and --add-to-index are options of --stage "
                         "contrastive|triplet")
    stages = ["3ch", "4ch"] if o["stage"] == "both" else [o["stage"]]
    four_channel = _four_channel_options(o, stages)
    parent = None
    if stages == ["4ch"]:
        found = {"stage": ModelVersion.Stage.RGB, "config": o["config"], "collection": o["collection"]}
        parent = (selectors.model_version_get(version_id=o["parent"], **found) if o["parent"]
                  else selectors.model_version_newest(**found))
        if parent is None:
            raise ValueError(f"no 3-channel {o['config']} model for {o['collection']!r}; train --stage 3ch first")
    options = profile.stage_options(stages, **common, **four_channel)
    return TrainingPlan(request=o, profile=profile.name, config=o["config"], collection=o["collection"],
                        stage=o["stage"], stages=stages, options=options, parent=parent)


def _four_channel_options(o: Mapping, stages: list[str]) -> dict:
    """The explicitly given 4-channel options as TrainOptions overrides; refused without a 4ch stage,
    and the IG options without --saliency integrated."""
    given = {field: o[key] for key, field in FOUR_CHANNEL_OPTIONS.items() if o[key] is not None}
    if given and "4ch" not in stages:
        raise ValueError("--saliency, --ig-steps, --ig-baseline and --stem-init are options of the 4-channel "
                         "stage (--stage 4ch or both)")
    if (o["ig_steps"] is not None or o["ig_baseline"] is not None) and o["saliency"] != "integrated":
        raise ValueError("--ig-steps and --ig-baseline need --saliency integrated")
    if o["ig_steps"] is not None and o["ig_steps"] < 1:
        raise ValueError("--ig-steps must be at least 1")
    return given


def _embedding_plan(o: dict, profile, common: dict) -> TrainingPlan:
    stage = o["stage"]
    if any(o[key] is not None for key in FOUR_CHANNEL_OPTIONS):
        raise ValueError("--saliency, --ig-steps, --ig-baseline and --stem-init are options of the "
                         "4-channel stage (--stage 4ch or both)")
    if o["margin"] is not None and o["margin"] <= 0:
        raise ValueError("--margin must be positive")
    if o["non_hierarchical"] and not o["groups"]:
        raise ValueError("--non-hierarchical needs --groups")
    if o["add_to_index"] and not isinstance(o["add_to_index"], bool):
        raise ValueError("add_to_index must be true or false")
    if isinstance(o["groups"], str):  # a CSV file of image_id,group; the request keeps what it says
        o["groups"] = read_groups(Path(o["groups"]), o["collection"])
    parent = None
    if o["parent"] is not None:
        parent = selectors.model_version_get(version_id=o["parent"], stage=ModelVersion.Stage.RGB,
                                             config=o["config"], collection=o["collection"])
        if parent is None:
            raise ValueError(f"--parent {o['parent']}: no 3-channel {o['config']} model of {o['collection']!r} "
                             "with that id")
    return TrainingPlan(request=o, profile=profile.name, config=o["config"], collection=o["collection"],
                        stage=stage, stages=[stage], options={stage: profile.options(stage, **common)},
                        parent=parent, groups=o["groups"], hierarchical=not o["non_hierarchical"],
                        margin=o["margin"])


def read_groups(path: Path, collection: str) -> dict[str, str]:
    """``image_id,group`` rows -> {case sha256 (the training items' key): group}; ValueError on bad input."""
    if not path.is_file():
        raise ValueError(f"--groups {path}: no such file")
    groups: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not any(cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if number == 1 and [c.lower() for c in cells[:2]] == ["image_id", "group"]:
                continue
            if len(cells) != 2 or not cells[0] or not cells[1]:
                raise ValueError(f"--groups {path}, line {number}: expected image_id,group, got {row!r}")
            image_id, group = cells
            if groups.get(image_id, group) != group:
                raise ValueError(f"--groups {path}, line {number}: {image_id} is in two groups "
                                   f"({groups[image_id]!r} and {group!r})")
            groups[image_id] = group
    if not groups:
        raise ValueError(f"--groups {path}: no rows")
    keys = selectors.case_keys(collection=collection, image_ids=groups)
    unknown = sorted(set(groups) - set(keys))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ValueError(f"--groups {path}: {len(unknown)} image id(s) not in collection {collection!r}: {shown}")
    return {keys[image_id]: group for image_id, group in groups.items()}


def training_items(*, collection: str) -> tuple[list, list]:
    """The collection's train and validation images as ml.data Items (label = class index)."""
    from retrieval.classes import CODES
    from retrieval.ml.data import Item

    splits_items: dict[str, list] = {"train": [], "val": []}
    rows = Case.objects.filter(collection=collection, split__in=list(splits_items)).order_by("id")
    for case in rows.only("id", "image", "dx", "split", "sha256"):
        splits_items[case.split].append(Item(case.image.path, CODES.index(case.dx), case.sha256))
    if not splits_items["train"] or not splits_items["val"]:
        raise ValueError(f"collection {collection!r} has no train/val split; run split_library first")
    return splits_items["train"], splits_items["val"]


def _register_model(*, config: str, stage: str, collection: str, result, parent, options, fingerprint) -> ModelVersion:
    from retrieval.ml.checkpoints import checkpoint_digest

    digest = checkpoint_digest(result.checkpoint)
    name, _ = store_content_file("models", digest, "pt", result.checkpoint)
    training = ({"saliency": options.saliency_options, "stem_init": options.stem_init}
                if stage == ModelVersion.Stage.RGB_SALIENCY else {})
    return ModelVersion.objects.create(
        config=config, stage=stage, parent=parent, collection=collection, checkpoint=name, checkpoint_sha256=digest,
        data_fingerprint=fingerprint, metrics={**result.metrics, "history": result.history},
        weights_source=result.weights_source[:255], seed=options.seed, epochs=options.epochs,
        training_options=training,
    )


def _train(plan: TrainingPlan, stage: str, parent: ModelVersion | None, work_dir: Path, **run):
    """Train one stage of the plan (``run``: resume, on_epoch, on_step, epochs_this_run); the
    loop's StageResult (None when it stopped after ``epochs_this_run``) and the data fingerprint."""
    from retrieval.ml.configs import get_config
    from retrieval.ml.data import data_fingerprint
    from retrieval.ml.embedding import train_embedding
    from retrieval.ml.train import train_stage

    config = get_config(plan.config)
    train, val = training_items(collection=plan.collection)
    parent_checkpoint = Path(parent.checkpoint.path) if parent is not None else None
    if stage in EMBEDDING_STAGES:
        result = train_embedding(stage, config, train, val, work_dir, options=plan.options[stage], groups=plan.groups,
                                 init_checkpoint=parent_checkpoint, hierarchical=plan.hierarchical,
                                 margin=plan.margin, **run)
    else:
        result = train_stage(stage, config, train, val, work_dir, options=plan.options[stage],
                             parent_checkpoint=parent_checkpoint if stage == "4ch" else None, **run)
    return result, data_fingerprint(train, val)


def _stage_parent(plan: TrainingPlan, stage: str, trained: Mapping[str, ModelVersion]) -> ModelVersion | None:
    """What ``stage`` starts from: the 3-channel model trained before it in this plan, or the plan's."""
    if stage == "4ch" and "3ch" in trained:
        return trained["3ch"]
    return plan.parent


def model_train(*, config_name: str, stages: list[str], collection: str, options, resume: Path | None = None,
                parent: ModelVersion | None = None, work_dir: Path) -> list[ModelVersion]:
    """Train the requested classifier stages in this process and register each as a ModelVersion.

    ``stages`` is ["3ch"], ["4ch"] (from ``parent``, a 3-channel ModelVersion) or both in order.
    ``options`` is one ``TrainOptions`` for every stage or a ``{stage: TrainOptions}`` mapping
    (a training profile's ``stage_options``), e.g. for different epochs per stage; ``resume``:
    the first stage's ``*-last.pt`` of an interrupted run.
    """
    if isinstance(options, Mapping) and set(stages) - set(options):
        raise ValueError(f"no training options for stage(s) {', '.join(sorted(set(stages) - set(options)))}")
    if "4ch" in stages and "3ch" not in stages:
        if parent is None or parent.stage != "3ch" or parent.config != config_name:
            raise ValueError(f"the 4-channel stage needs a trained {config_name} 3-channel model (--parent)")
    plan = TrainingPlan(request={}, profile="", config=config_name, collection=collection, stage="+".join(stages),
                        stages=list(stages), parent=parent,
                        options={s: options[s] if isinstance(options, Mapping) else options for s in stages})
    trained: dict[str, ModelVersion] = {}
    for stage in stages:
        stage_parent = _stage_parent(plan, stage, trained)
        result, fingerprint = _train(plan, stage, stage_parent, work_dir,
                                     resume=resume if resume and stage == stages[0] else None)
        trained[stage] = _register_model(config=config_name, stage=stage, collection=collection, result=result,
                                         parent=stage_parent if stage == "4ch" else None,
                                         options=plan.options[stage], fingerprint=fingerprint)
    return list(trained.values())


def embedding_train(*, config_name: str, stage: str, collection: str, options, work_dir: Path,
                    parent: ModelVersion | None = None, groups: dict[str, str] | None = None,
                    hierarchical: bool = True, margin: float | None = None,
                    resume: Path | None = None) -> ModelVersion:
    """Train a metric-learning embedding (``stage`` contrastive or triplet) in this process, from
    ImageNet weights or ``parent``'s (a 3-channel ModelVersion) backbone, and register it as a
    ModelVersion like the classifiers. ``groups``: case sha256 -> similarity group (default:
    similar = same class); ``hierarchical``, ``margin``: as ``retrieval.ml.embedding.train_embedding``."""
    plan = TrainingPlan(request={}, profile="", config=config_name, collection=collection, stage=stage,
                        stages=[stage], options={stage: options}, parent=parent, groups=groups,
                        hierarchical=hierarchical, margin=margin)
    result, fingerprint = _train(plan, stage, parent, work_dir, resume=resume)
    return _register_model(config=config_name, stage=stage, collection=collection, result=result, parent=parent,
                           options=options, fingerprint=fingerprint)


# ----------------------------------------------------------------------------------------------
# Training as a background job

def training_queue(*, request: Mapping, user=None) -> TrainingJob:
    """Check a request (``training_plan``; ValueError) and queue it as a TrainingJob for the worker."""
    plan = training_plan(request)
    with transaction.atomic():
        job = TrainingJob.objects.create(
            config=plan.config, collection=plan.collection, stage=plan.stage, request=plan.request,
            requested_by=user, total=plan.total_epochs,
            message=f"waiting for the worker: {_plan_summary(plan)}")
        jobs.enqueue_on_commit(TRAINING, job.id)
    return job


def training_refresh(job: TrainingJob) -> TrainingJob:
    """Re-read a training job, re-sending it when its message was lost (``jobs.refresh``)."""
    return jobs.refresh(TRAINING, job)


def training_work_dir(job: TrainingJob) -> Path:
    """Where a job's checkpoints live until it is done: ``<stage>-last.pt`` is what a takeover resumes."""
    return Path(settings.MEDIA_ROOT) / "training" / f"job-{job.id}"


class JobLost(Exception):
    """The worker no longer holds its job (taken over, failed by an administrator, deleted)."""


def training_run(*, job_id: int, worker: str, enqueue_next: bool = True) -> bool:
    """One task run of a training job: claim it and train one epoch of its current stage, resuming
    from the stage's last checkpoint; register a finished stage's model; then release the job for
    its next run (sent at once) or finish it. False when there was nothing to do for ``worker``."""
    job = jobs.claim(TRAINING, job_id, worker)
    if job is None:
        return False
    try:
        plan = training_plan(job.request)
        more = _training_step(job, plan, worker)
    except JobLost:
        logger.warning("training job %s: %s no longer holds it; stopping", job_id, worker)
        return False
    except (ValueError, RuntimeError, OSError, LookupError) as exc:
        logger.exception("training job %s failed", job_id)
        jobs.fail(TRAINING, job_id, f"Training failed: {exc}", worker=worker)
        return False
    if more:
        if jobs.release(TRAINING, job_id, worker) and enqueue_next:
            jobs.send(TRAINING, job_id)
        return True
    versions = ", ".join(str(v) for v in job.model_versions.order_by("id"))
    if jobs.finish(TRAINING, job_id, worker, done=plan.total_epochs, message=f"Trained {versions}."):
        shutil.rmtree(training_work_dir(job), ignore_errors=True)
        if plan.request.get("add_to_index"):
            _add_to_index(plan)
    return True


def _add_to_index(plan: TrainingPlan) -> None:
    """Queue the build that adds the new embedding to the active index (or say why there is none)."""
    from retrieval.services.index import index_methods_add

    try:
        build = index_methods_add(collection=plan.collection)
    except ValueError as exc:
        logger.warning("training of %s: not added to an index: %s", plan.stage, exc)
        return
    logger.info("training of %s: index build #%s adds %s", plan.stage, build.id,
                ", ".join((build.descriptors or {}).get("adds") or []))


def _training_step(job: TrainingJob, plan: TrainingPlan, worker: str) -> bool:
    """Train one epoch of the first stage without a model; True while epochs or stages remain."""
    trained = {version.stage: version for version in job.model_versions.all()}
    stage = next(stage for stage in plan.stages if stage not in trained)
    before = sum(plan.options[s].epochs for s in plan.stages[:plan.stages.index(stage)])
    epochs = plan.options[stage].epochs
    work_dir = training_work_dir(job)
    last = work_dir / f"{stage}-last.pt"
    parent = _stage_parent(plan, stage, trained)
    beat = {"at": time.monotonic()}

    def on_step() -> None:
        if time.monotonic() - beat["at"] >= HEARTBEAT_SECONDS:
            beat["at"] = time.monotonic()
            if not jobs.heartbeat(TRAINING, job.id, worker):
                raise JobLost

    def on_epoch(metrics: dict) -> None:
        if not jobs.progress(TRAINING, job.id, worker, done=before + metrics["epoch"], total=plan.total_epochs,
                             message=f"{stage} epoch {metrics['epoch']} of {epochs}: {_epoch_summary(metrics)}"):
            raise JobLost

    jobs.progress(TRAINING, job.id, worker, message=f"{stage}: training epoch "
                  f"{_next_epoch(last) + 1} of {epochs}" + (" (resumed from its checkpoint)" if last.exists() else ""))
    result, fingerprint = _train(plan, stage, parent, work_dir, resume=last if last.exists() else None,
                                 on_epoch=on_epoch, on_step=on_step, epochs_this_run=1)
    if result is None:
        return True
    with transaction.atomic():
        if not jobs.held(TRAINING, job.id, worker).select_for_update().exists():
            raise JobLost
        version = _register_model(config=plan.config, stage=stage, collection=plan.collection, result=result,
                                  parent=parent if stage == "4ch" or plan.embedding else None,
                                  options=plan.options[stage], fingerprint=fingerprint)
        job.model_versions.add(version)
    logger.info("training job %s: registered %s", job.id, version)
    return stage != plan.stages[-1]


def _next_epoch(last: Path) -> int:
    """Epochs already in a stage's last checkpoint (0 without one)."""
    if not last.exists():
        return 0
    from retrieval.ml.checkpoints import read_checkpoint

    return read_checkpoint(last)["epoch"] + 1


def _epoch_summary(metrics: Mapping) -> str:
    if "macro_sensitivity" in metrics:
        return f"validation macro sensitivity {metrics['macro_sensitivity']:.3f}, accuracy {metrics['accuracy']:.3f}"
    shown = [f"AP@6 {metrics['ap_at_6']:.3f}"] if "ap_at_6" in metrics else []
    return ", ".join(shown + [f"loss {metrics['loss']:.4f}"])


def _plan_summary(plan: TrainingPlan) -> str:
    stages = ", ".join(f"{stage} {plan.options[stage].epochs} epochs" for stage in plan.stages)
    return f"{plan.config} on {plan.collection!r}, profile {plan.profile}: {stages}"
