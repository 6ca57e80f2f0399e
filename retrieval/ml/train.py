"""Training the two SE-CBIR classifiers (thesis section 3.3): the loop. Plain PyTorch, no Django.

Stage "3ch": the RGB classifier from ImageNet weights; strong augmentation; adaptive learning
rate (head x200 from 5e-5). Stage "4ch": the 3-channel model widened to RGB + saliency
(the saliency filter of the stem starting as the mean of the RGB filters or as zeros,
``TrainOptions.stem_init``); saliency maps of the training images (vanilla gradient, or
integrated gradients with ``TrainOptions.saliency``) computed once with the 3-channel model
(ground-truth class) and cached, validation maps with the predicted class (as queries get them);
rotations and flips applied identically to image and map; stem and head x100 from 1e-5. Both: focal
loss (alpha 0.25, gamma 2), batch 32, 5 ramp-up epochs to 6x then x0.8 per epoch (the defaults
of :class:`TrainOptions`; ``retrieval/ml/profiles.py`` names the thesis and the demo settings).
The best epoch by validation macro sensitivity is kept. Checkpoints hold weights, config, class list,
metrics and a data fingerprint; training resumes from the last epoch's checkpoint.

The parts the loop is made of have their own modules: the data (:mod:`retrieval.ml.data`), the
checkpoints and stage names (:mod:`retrieval.ml.checkpoints`), seeding (:mod:`retrieval.ml.seeding`)
and devices (:mod:`retrieval.ml.devices`). The metric-learning embeddings (stages "contrastive" and
"triplet", papers 002 and 004) have their own loop, :func:`retrieval.ml.embedding.train_embedding`,
which takes the same :class:`TrainOptions`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from retrieval.ml.checkpoints import (
    STAGE_3CH, STAGE_4CH, STAGES, checkpoint_digest, end_epoch, load_checkpoint, read_checkpoint, resume_checkpoint,
    training_checkpoint,
)
from retrieval.ml.configs import ModelConfig
from retrieval.ml.data import Item, RGBDataset, SaliencyDataset, data_fingerprint, load_resized, to_input
from retrieval.ml.devices import MEMORY_FORMAT, resolve_device
from retrieval.ml.features import normalise
from retrieval.ml.losses import FocalLoss
from retrieval.ml.metrics import classification_scores
from retrieval.ml.network import (
    DEFAULT_STEM_INIT, NUM_CLASSES, STEM_INITS, SECBIRNet, build_model, stem_parameter_names, widen_to_saliency,
)
from retrieval.ml.saliency import (
    BASELINES, DEFAULT_IG_BASELINE, DEFAULT_IG_STEPS, INTEGRATED, SALIENCY_METHODS, VANILLA, integrated_gradients,
    saliency_batch_size, saliency_record, vanilla_gradient,
)
from retrieval.ml.schedule import (
    BATCH_SIZE, DECAY, EPOCHS, FOUR_CHANNEL_LR, PEAK_MULTIPLIER, RAMP_EPOCHS, THREE_CHANNEL_LR, check_schedule,
    make_scheduler, param_groups,
)
from retrieval.ml.seeding import seed_everything

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainOptions:
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    lr: float | None = None  # base learning rate; None = the thesis value of the stage
    lr_factor: float | None = None
    # The thesis gives learning rates (1e-2 for new layers, peaking at 6e-2) but not the
    # optimizer; those rates suit SGD with momentum, while Adam at 6e-2 kills the head's ReLU
    # units and the classifier collapses onto the majority class.
    optimizer: str = "sgd"
    momentum: float = 0.9
    progress: bool = True
    # Learning-rate schedule (retrieval.ml.schedule): ramp from 1x to ``peak`` x over
    # ``ramp_epochs``, then x ``decay`` per epoch. Defaults: the thesis's 5 epochs, 6x, 0.8.
    ramp_epochs: int = RAMP_EPOCHS
    peak: float = PEAK_MULTIPLIER
    decay: float = DECAY
    # 4-channel stage only: which saliency maps the model trains on (the thesis: vanilla gradient;
    # integrated gradients with ``ig_steps`` steps from a black or grey ``ig_baseline``), and how
    # the saliency filter of the widened stem starts (retrieval.ml.network.STEM_INITS).
    saliency: str = VANILLA
    ig_steps: int = DEFAULT_IG_STEPS
    ig_baseline: str = DEFAULT_IG_BASELINE
    stem_init: str = DEFAULT_STEM_INIT
    # Mixed precision (autocast + gradient scaling) on CUDA; False trains in FP32 there too (CPU
    # training is always FP32). bench/gpu.py compares the two.
    amp: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be at least 1, got {self.epochs}, {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use {' or '.join(OPTIMIZERS)}")
        if self.saliency not in SALIENCY_METHODS:
            raise ValueError(f"unknown saliency method {self.saliency!r}; use {' or '.join(SALIENCY_METHODS)}")
        if self.ig_steps < 1 or self.ig_baseline not in BASELINES:
            raise ValueError(f"integrated gradients need ig_steps >= 1 and a baseline in {BASELINES}")
        if self.stem_init not in STEM_INITS:
            raise ValueError(f"unknown stem init {self.stem_init!r}; use {' or '.join(STEM_INITS)}")
        check_schedule(self.ramp_epochs, self.peak, self.decay)

    @property
    def schedule(self) -> dict:
        return {"ramp_epochs": self.ramp_epochs, "peak": self.peak, "decay": self.decay}

    @property
    def saliency_options(self) -> dict:
        """The saliency maps of a 4-channel model, as recorded on its checkpoint and ModelVersion."""
        return saliency_record(self.saliency, self.ig_steps, self.ig_baseline)


@dataclass
class StageResult:
    checkpoint: Path  # the best epoch's checkpoint
    metrics: dict  # validation metrics of the best epoch
    history: list[dict] = field(default_factory=list)
    weights_source: str = ""

    @classmethod
    def from_best(cls, best_path: Path, history: list[dict], weights_source: str) -> StageResult:
        """The result of a run whose best epoch's checkpoint is ``best_path`` (its metrics are read from it)."""
        return cls(best_path, read_checkpoint(best_path)["metrics"], history, weights_source)

    @classmethod
    def if_finished(cls, best_path: Path, history: list[dict], weights_source: str, *,
                    epochs: int) -> StageResult | None:
        """:meth:`from_best` once all ``epochs`` ran; None for a run stopped earlier (after
        ``epochs_this_run``), which resumes from its ``<stage>-last.pt``."""
        if len(history) < epochs:
            return None
        return cls.from_best(best_path, history, weights_source)


def compute_saliency_maps(model3: SECBIRNet, items: Sequence[Item], *, use_labels: bool, device: torch.device,
                          progress: bool = True, description: str = "Saliency", method: str = VANILLA,
                          ig_steps: int = DEFAULT_IG_STEPS, ig_baseline: str = "black",
                          on_step: Callable[[], None] | None = None) -> np.ndarray:
    """(N, S, S) float16 maps at the model's input size, batched to fit in memory (``on_step``
    after each batch).

    ``method`` vanilla (the thesis) or integrated (``ig_steps`` steps from ``ig_baseline``), as
    :class:`retrieval.ml.features.SECBIREncoder` makes them for library images and queries.
    """
    config = model3.config
    batch = saliency_batch_size(config.saliency_mb_per_image, device)
    out = np.empty((len(items), config.input_size, config.input_size), dtype=np.float16)
    model3 = model3.to(device, memory_format=MEMORY_FORMAT)
    for start in tqdm(range(0, len(items), batch), desc=description, disable=not progress, unit="batch"):
        chunk = items[start:start + batch]
        images = np.stack([load_resized(i.path, config.input_size) for i in chunk])
        target = torch.tensor([i.label for i in chunk], device=device) if use_labels else None
        x = normalise(images, config).to(device, memory_format=MEMORY_FORMAT)
        if method == INTEGRATED:
            maps, _ = integrated_gradients(model3, x, target, steps=ig_steps, baseline=ig_baseline,
                                           mean=config.mean, std=config.std)
        else:
            maps, _ = vanilla_gradient(model3, x, target)
        out[start:start + len(chunk)] = maps.cpu().numpy().astype(np.float16)
        if on_step:
            on_step()
    return out


def _saliency_cache_tag(options: TrainOptions) -> str:
    # Vanilla maps keep the cache name they always had, so existing caches stay valid.
    if options.saliency == VANILLA:
        return ""
    return f"-ig{options.ig_steps}{options.ig_baseline}"


def stop_epoch(start_epoch: int, epochs: int, epochs_this_run: int | None) -> int:
    """Where a run that starts at ``start_epoch`` stops: the end, or ``epochs_this_run`` later."""
    if epochs_this_run is None:
        return epochs
    if epochs_this_run < 1:
        raise ValueError(f"epochs_this_run must be at least 1, got {epochs_this_run}")
    return min(epochs, start_epoch + epochs_this_run)


def evaluate(model: SECBIRNet, loader: DataLoader, device: torch.device) -> dict:
    model.eval()
    truth, predicted = [], []
    with torch.no_grad():
        for batch, labels in loader:
            logits = model(to_input(batch, model.config, device))
            predicted.extend(logits.argmax(dim=1).cpu().tolist())
            truth.extend(labels.tolist())
    scores = classification_scores(truth, predicted, classes=list(range(NUM_CLASSES)))
    return {"accuracy": float(scores.accuracy), "macro_sensitivity": float(scores.macro_sensitivity),
            "n": len(truth)}


def train_stage(stage: str, config: ModelConfig, train: Sequence[Item], val: Sequence[Item], out_dir: Path, *,
                options: TrainOptions, parent_checkpoint: Path | None = None, resume: Path | None = None,
                on_epoch: Callable[[dict], None] | None = None, on_step: Callable[[], None] | None = None,
                epochs_this_run: int | None = None) -> StageResult | None:
    """Train one stage; returns the best checkpoint (by validation macro sensitivity).

    ``resume``: an interrupted run's ``<stage>-last.pt`` to continue from. ``on_epoch`` is called
    with each epoch's metrics, ``on_step`` after each batch (a job's heartbeat; either may raise to
    stop the run). ``epochs_this_run``: train at most this many epochs, then return None (the
    run continues with ``resume=out_dir / f"{stage}-last.pt"``), as a background job does.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if not train or not val:
        raise ValueError("training needs non-empty train and validation sets")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    generator = seed_everything(options.seed)
    fingerprint = data_fingerprint(train, val)

    if stage == STAGE_3CH:
        model = build_model(config)
        weights_source = model.weights_source
        new_layers = model.new_layer_names()
        lrs = THREE_CHANNEL_LR
        train_set = RGBDataset(train, config.input_size, train=True, seed=options.seed)
        val_set = RGBDataset(val, config.input_size, train=False, seed=options.seed)
    else:
        if parent_checkpoint is None:
            raise ValueError("the 4-channel stage starts from a trained 3-channel checkpoint")
        model3 = load_checkpoint(parent_checkpoint)
        weights_source = f"widened from {parent_checkpoint.name}"
        cache = out_dir / (f"saliency-{fingerprint[:16]}-{checkpoint_digest(parent_checkpoint)[:16]}"
                           f"{_saliency_cache_tag(options)}.npz")
        if cache.exists():
            stored = np.load(cache)
            train_maps, val_maps = stored["train"], stored["val"]
        else:
            started = time.perf_counter()
            how = {"method": options.saliency, "ig_steps": options.ig_steps, "ig_baseline": options.ig_baseline}
            train_maps = compute_saliency_maps(model3, train, use_labels=True, device=device, progress=options.progress,
                                               description="Saliency (train)", on_step=on_step, **how)
            val_maps = compute_saliency_maps(model3, val, use_labels=False, device=device, progress=options.progress,
                                             description="Saliency (val)", on_step=on_step, **how)
            np.savez(cache, train=train_maps, val=val_maps)
            logger.info("%s %s saliency maps of %d train + %d val images: %.1f s", config.name, options.saliency,
                        len(train), len(val), time.perf_counter() - started)
        model = widen_to_saliency(model3, stem_init=options.stem_init)
        new_layers = model.new_layer_names() | stem_parameter_names(model)
        lrs = FOUR_CHANNEL_LR
        train_set = SaliencyDataset(train, train_maps, config.input_size, train=True, seed=options.seed)
        val_set = SaliencyDataset(val, val_maps, config.input_size, train=False, seed=options.seed)

    model = model.to(device, memory_format=MEMORY_FORMAT)
    base_lr = options.lr if options.lr is not None else lrs.base_lr
    factor = options.lr_factor if options.lr_factor is not None else lrs.factor
    groups = param_groups(model, new_layers, base_lr, factor)
    if options.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, momentum=options.momentum, nesterov=True)
    elif options.optimizer == "adam":
        optimizer = torch.optim.Adam(groups)
    else:
        raise ValueError(f"unknown optimizer {options.optimizer!r}; use {' or '.join(OPTIMIZERS)}")
    scheduler = make_scheduler(optimizer, options.ramp_epochs, options.peak, options.decay)
    criterion = FocalLoss()
    use_amp = device.type == "cuda" and options.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    workers = options.num_workers if device.type == "cuda" else 0
    val_loader = DataLoader(val_set, batch_size=options.batch_size, shuffle=False, num_workers=workers)

    start_epoch, best, history = 0, -1.0, []
    last_path, best_path = out_dir / f"{stage}-last.pt", out_dir / f"{stage}-best.pt"
    if resume is not None:
        recorded = ({"saliency": (options.saliency_options, saliency_record()),
                     "stem_init": (options.stem_init, DEFAULT_STEM_INIT)} if stage == STAGE_4CH else None)
        start_epoch, best, history = resume_checkpoint(
            resume, stage=stage, config_name=config.name, fingerprint=fingerprint, model=model, optimizer=optimizer,
            scheduler=scheduler, generator=generator, recorded=recorded)
        logger.info("resuming %s %s at epoch %d", config.name, stage, start_epoch + 1)

    for epoch in range(start_epoch, stop_epoch(start_epoch, options.epochs, epochs_this_run)):
        train_set.epoch = epoch
        loader = DataLoader(train_set, batch_size=options.batch_size, shuffle=True, generator=generator,
                            num_workers=workers, drop_last=len(train_set) > options.batch_size)
        model.train()
        started = time.perf_counter()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{options.epochs}", disable=not options.progress, unit="batch")
        for batch, labels in bar:
            x, y = to_input(batch, config, device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, count = total + loss.item() * len(y), count + len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
            if on_step:
                on_step()
        scheduler.step()
        trained = time.perf_counter()
        metrics = {"epoch": epoch + 1, "loss": total / max(count, 1), **evaluate(model, val_loader, device),
                   "lr": optimizer.param_groups[0]["lr"]}
        # Wall-clock seconds of this epoch's training pass and validation pass (for run-time budgets).
        metrics["train_seconds"] = round(trained - started, 4)
        metrics["val_seconds"] = round(time.perf_counter() - trained, 4)
        history.append(metrics)
        logger.info("%s %s epoch %d: %s", config.name, stage, epoch + 1, metrics)
        improved = metrics["macro_sensitivity"] > best
        best = max(best, metrics["macro_sensitivity"])
        payload = training_checkpoint(model, config, stage, metrics, fingerprint, weights_source, epoch, best,
                                      history, optimizer, scheduler, generator, options)
        end_epoch(payload, metrics, last_path, best_path, improved=improved, on_epoch=on_epoch)

    return StageResult.if_finished(best_path, history, weights_source, epochs=options.epochs)

