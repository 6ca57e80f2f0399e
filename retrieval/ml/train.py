"""Training the two SE-CBIR classifiers (thesis section 3.3). Plain PyTorch, no Django.

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

Stages "contrastive" and "triplet": metric-learning embeddings (papers 002 and 004) trained on
pairs/triplets by :func:`train_embedding`, which delegates to :mod:`retrieval.ml.metric`.
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from retrieval.ml import augment
from retrieval.ml.configs import ModelConfig, get_config
from retrieval.ml.features import as_rgb, normalise, resize_rgb, with_saliency
from retrieval.ml.losses import FocalLoss
from retrieval.ml.metrics import classification_scores
from retrieval.ml.network import (
    DEFAULT_STEM_INIT, NUM_CLASSES, STEM_INITS, SECBIRNet, build_model, stem_parameter_names, widen_to_saliency,
)
from retrieval.ml.saliency import (
    BASELINES, DEFAULT_IG_STEPS, INTEGRATED, METHODS as SALIENCY_METHODS, VANILLA, integrated_gradients,
    saliency_batch_size, vanilla_gradient,
)
from retrieval.ml.schedule import (
    BATCH_SIZE, DECAY, EPOCHS, FOUR_CHANNEL_LR, PEAK_MULTIPLIER, RAMP_EPOCHS, THREE_CHANNEL_LR, check_schedule,
    make_scheduler, param_groups,
)

logger = logging.getLogger(__name__)

STAGE_3CH, STAGE_4CH = "3ch", "4ch"
STAGES = (STAGE_3CH, STAGE_4CH)  # the SE-CBIR classifiers (train_stage)
#: The metric-learning embeddings (papers 002 and 004), trained by :func:`train_embedding`
#: (the loop lives in retrieval/ml/metric.py) and loaded with ``metric.load_embedding``.
STAGE_CONTRASTIVE, STAGE_TRIPLET = "contrastive", "triplet"
EMBEDDING_STAGES = (STAGE_CONTRASTIVE, STAGE_TRIPLET)
CHECKPOINT_FORMAT = 1
OPTIMIZERS = ("sgd", "adam")
# Models and inputs are kept channels-last (NHWC): oneDNN runs the depthwise and pointwise
# convolutions that make up EfficientNet faster that way (Lite0, 128 px, batch 32, 2 CPU threads:
# 0.8 instead of 1.1-1.3 s per training step), and it is the layout CUDA's tensor cores prefer.
MEMORY_FORMAT = torch.channels_last


@dataclass(frozen=True)
class Item:
    """One training image: where it is, its class index, and a stable id for fingerprints."""

    path: str
    label: int
    key: str


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
    ig_baseline: str = "black"
    stem_init: str = DEFAULT_STEM_INIT

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


def saliency_record(method: str = VANILLA, ig_steps: int = DEFAULT_IG_STEPS, ig_baseline: str = "black") -> dict:
    """``{"method": ...}`` (plus ``ig_steps`` and ``ig_baseline`` for integrated gradients): how a
    4-channel model's saliency maps are made; evaluation and indexing must make them the same way."""
    if method == INTEGRATED:
        return {"method": INTEGRATED, "ig_steps": int(ig_steps), "ig_baseline": ig_baseline}
    return {"method": method}


@dataclass
class StageResult:
    checkpoint: Path  # the best epoch's checkpoint
    metrics: dict  # validation metrics of the best epoch
    history: list[dict] = field(default_factory=list)
    weights_source: str = ""


def data_fingerprint(train: Sequence[Item], val: Sequence[Item]) -> str:
    digest = hashlib.sha256()
    for split, items in (("train", train), ("val", val)):
        for item in sorted(items, key=lambda i: i.key):
            digest.update(f"{split}:{item.key}:{item.label}\n".encode())
    return digest.hexdigest()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def load_resized(path: str, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return resize_rgb(image, size)


class RGBDataset(Dataset):
    """Images for the 3-channel classifier; augmentation seeded by (seed, epoch, index)."""

    def __init__(self, items: Sequence[Item], size: int, *, train: bool, seed: int) -> None:
        self.items, self.size, self.train, self.seed, self.epoch = list(items), size, train, seed, 0
        self.augment = augment.strong_rgb_augmentation(size) if train else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        if self.train:
            with Image.open(item.path) as image:
                array = np.asarray(as_rgb(image), dtype=np.uint8)
            array = self.augment(array, np.random.default_rng([self.seed, self.epoch, index]))
        else:
            array = load_resized(item.path, self.size)
        return torch.from_numpy(np.array(array, dtype=np.uint8)), item.label


class SaliencyDataset(Dataset):
    """Image + cached saliency pairs for the 4-channel classifier; rotations/flips only."""

    def __init__(self, items: Sequence[Item], saliency: np.ndarray, size: int, *, train: bool, seed: int) -> None:
        if len(items) != len(saliency):
            raise ValueError("one saliency map per item is required")
        self.items, self.saliency, self.size, self.train, self.seed, self.epoch = list(items), saliency, size, train, seed, 0
        self.augment = augment.paired_geometric_augmentation(size) if train else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        image = load_resized(item.path, self.size)
        saliency = np.asarray(self.saliency[index], dtype=np.float32)
        if self.train:
            image, saliency = self.augment(image, saliency, np.random.default_rng([self.seed, self.epoch, index]))
        return (torch.from_numpy(np.array(image, dtype=np.uint8)), torch.from_numpy(np.array(saliency, dtype=np.float32))), item.label


def _to_input(batch, config: ModelConfig, device: torch.device) -> torch.Tensor:
    if isinstance(batch, (list, tuple)):
        images, saliency = batch
        x = with_saliency(normalise(images.numpy(), config), saliency.float())
    else:
        x = normalise(batch.numpy(), config)
    return x.to(device, memory_format=MEMORY_FORMAT)


def compute_saliency_maps(model3: SECBIRNet, items: Sequence[Item], *, use_labels: bool, device: torch.device,
                          progress: bool = True, description: str = "Saliency", method: str = VANILLA,
                          ig_steps: int = DEFAULT_IG_STEPS, ig_baseline: str = "black") -> np.ndarray:
    """(N, S, S) float16 maps at the model's input size, batched to fit in memory.

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
    return out


def _saliency_cache_tag(options: TrainOptions) -> str:
    # Vanilla maps keep the cache name they always had, so existing caches stay valid.
    if options.saliency == VANILLA:
        return ""
    return f"-ig{options.ig_steps}{options.ig_baseline}"


def evaluate(model: SECBIRNet, loader: DataLoader, device: torch.device) -> dict:
    model.eval()
    truth, predicted = [], []
    with torch.no_grad():
        for batch, labels in loader:
            logits = model(_to_input(batch, model.config, device))
            predicted.extend(logits.argmax(dim=1).cpu().tolist())
            truth.extend(labels.tolist())
    scores = classification_scores(truth, predicted, classes=list(range(NUM_CLASSES)))
    return {"accuracy": float(scores.accuracy), "macro_sensitivity": float(scores.macro_sensitivity),
            "n": len(truth)}


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def train_stage(stage: str, config: ModelConfig, train: Sequence[Item], val: Sequence[Item], out_dir: Path, *,
                options: TrainOptions, parent_checkpoint: Path | None = None, resume: Path | None = None,
                on_epoch: Callable[[dict], None] | None = None) -> StageResult:
    """Train one stage; returns the best checkpoint (by validation macro sensitivity)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if not train or not val:
        raise ValueError("training needs non-empty train and validation sets")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    generator = _seed_everything(options.seed)
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
                                               description="Saliency (train)", **how)
            val_maps = compute_saliency_maps(model3, val, use_labels=False, device=device, progress=options.progress,
                                             description="Saliency (val)", **how)
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
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    workers = options.num_workers if device.type == "cuda" else 0
    val_loader = DataLoader(val_set, batch_size=options.batch_size, shuffle=False, num_workers=workers)

    start_epoch, best, history = 0, -1.0, []
    last_path, best_path = out_dir / f"{stage}-last.pt", out_dir / f"{stage}-best.pt"
    if resume is not None:
        state = torch.load(resume, map_location="cpu", weights_only=False)
        if state["stage"] != stage or state["config"] != config.name:
            raise ValueError(f"{resume} is a {state['config']} {state['stage']} checkpoint, not {config.name} {stage}")
        if state["data_fingerprint"] != fingerprint:
            raise ValueError(f"{resume} was trained on different data (fingerprint mismatch); start a new run")
        if stage == STAGE_4CH:
            recorded = (state.get("saliency", saliency_record()), state.get("stem_init", DEFAULT_STEM_INIT))
            if recorded != (options.saliency_options, options.stem_init):
                raise ValueError(f"{resume} was trained with saliency {recorded[0]} and stem init {recorded[1]!r}, "
                                 f"not {options.saliency_options} and {options.stem_init!r}")
        model.load_state_dict(state["weights"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history = state["epoch"] + 1, state["best_metric"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["loader_rng"])
        logger.info("resuming %s %s at epoch %d", config.name, stage, start_epoch + 1)

    for epoch in range(start_epoch, options.epochs):
        train_set.epoch = epoch
        loader = DataLoader(train_set, batch_size=options.batch_size, shuffle=True, generator=generator,
                            num_workers=workers, drop_last=len(train_set) > options.batch_size)
        model.train()
        started = time.perf_counter()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{options.epochs}", disable=not options.progress, unit="batch")
        for batch, labels in bar:
            x, y = _to_input(batch, config, device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, count = total + loss.item() * len(y), count + len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        scheduler.step()
        trained = time.perf_counter()
        metrics = {"epoch": epoch + 1, "loss": total / max(count, 1), **evaluate(model, val_loader, device),
                   "lr": optimizer.param_groups[0]["lr"]}
        # Wall-clock seconds of this epoch's training pass and validation pass (for run-time budgets).
        metrics["train_seconds"] = round(trained - started, 2)
        metrics["val_seconds"] = round(time.perf_counter() - trained, 2)
        history.append(metrics)
        logger.info("%s %s epoch %d: %s", config.name, stage, epoch + 1, metrics)
        improved = metrics["macro_sensitivity"] > best
        best = max(best, metrics["macro_sensitivity"])
        payload = _checkpoint(model, config, stage, metrics, fingerprint, weights_source, epoch, best, history,
                              optimizer, scheduler, generator, options)
        torch.save(payload, last_path)
        if improved:
            torch.save(payload, best_path)
        if on_epoch:
            on_epoch(metrics)

    best_state = torch.load(best_path, map_location="cpu", weights_only=False)
    return StageResult(best_path, best_state["metrics"], history, weights_source)


def train_embedding(stage: str, config: ModelConfig, train: Sequence[Item], val: Sequence[Item], out_dir: Path, *,
                    options: TrainOptions, groups=None, init_checkpoint: Path | None = None,
                    on_epoch: Callable[[dict], None] | None = None, **kwargs) -> StageResult:
    """Train a contrastive or triplet embedding: :func:`retrieval.ml.metric.train_embedding`."""
    from retrieval.ml.metric import train_embedding as train_metric

    return train_metric(stage, config, train, val, out_dir, options=options, groups=groups,
                        init_checkpoint=init_checkpoint, on_epoch=on_epoch, **kwargs)


def _checkpoint(model, config, stage, metrics, fingerprint, weights_source, epoch, best, history, optimizer, scheduler,
                generator, options) -> dict:
    from retrieval.classes import CODES  # a plain constants module, no Django

    return {
        "format": CHECKPOINT_FORMAT, "config": config.name, "stage": stage, "classes": list(CODES),
        "channels": model.in_chans, "weights": model.state_dict(), "metrics": metrics, "history": list(history),
        "data_fingerprint": fingerprint, "weights_source": weights_source, "epoch": epoch, "best_metric": best,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
        "loader_rng": generator.get_state(), "seed": options.seed, "epochs": options.epochs,
        "batch_size": options.batch_size, "schedule": options.schedule,
        **({"saliency": options.saliency_options, "stem_init": options.stem_init} if stage == STAGE_4CH else {}),
    }


def checkpoint_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: Path, *, device: str | torch.device = "cpu") -> SECBIRNet:
    """A model from a checkpoint (no ImageNet weights are loaded: the checkpoint has all weights)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a LesionSearch checkpoint (format {state.get('format')!r})")
    if state.get("stage") in EMBEDDING_STAGES:
        raise ValueError(f"{path} is a {state['stage']} embedding, not a classifier; load it with "
                         "retrieval.ml.metric.load_embedding")
    config = get_config(state["config"])
    model = build_model(config, pretrained=False)
    if state["channels"] == 4:
        model = widen_to_saliency(model)
    model.load_state_dict(state["weights"])
    model.weights_source = state.get("weights_source", "")
    return model.to(device).eval()
