"""Training checkpoints: the stages they hold, their layout, their digest, and loading a classifier.

A checkpoint is one ``torch.save``'d dict, written after every epoch by both training loops
(``<stage>-last.pt``, and ``<stage>-best.pt`` when the epoch is the best so far):

* ``format`` (:data:`CHECKPOINT_FORMAT`), ``config`` (a :mod:`retrieval.ml.configs` name), ``stage``
  (one of :data:`STAGES` or :data:`EMBEDDING_STAGES`), ``classes`` (the class codes, in label order),
  ``channels``, ``weights`` (the model's state dict), ``weights_source``;
* the epoch's ``metrics``, the ``history`` of every epoch so far, ``best_metric``, ``epoch``;
* what makes a run resumable and reproducible: ``data_fingerprint`` (:func:`retrieval.ml.data.data_fingerprint`),
  ``optimizer``, ``scheduler``, ``torch_rng``, ``loader_rng``, ``seed``, ``epochs``, ``batch_size``, ``schedule``;
* a 4-channel classifier also records its ``saliency`` maps (:func:`retrieval.ml.saliency.saliency_record`)
  and ``stem_init``; an embedding its ``kind``, ``embedding_dim``, ``margin``, ``hierarchical``,
  ``grouped`` and ``selection_metric`` (:mod:`retrieval.ml.embedding`).

Classifiers load with :func:`load_checkpoint`, embeddings with
:func:`retrieval.ml.embedding.load_embedding`; each refuses the other's checkpoints. Plain PyTorch,
no Django.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from retrieval.classes import CODES  # a plain constants module, no Django
from retrieval.ml.configs import get_config
from retrieval.ml.network import SECBIRNet, build_model, widen_to_saliency

#: The SE-CBIR classifiers (:func:`retrieval.ml.train.train_stage`).
STAGE_3CH, STAGE_4CH = "3ch", "4ch"
STAGES = (STAGE_3CH, STAGE_4CH)
#: The metric-learning embeddings (papers 002 and 004; :func:`retrieval.ml.embedding.train_embedding`).
STAGE_CONTRASTIVE, STAGE_TRIPLET = "contrastive", "triplet"
EMBEDDING_STAGES = (STAGE_CONTRASTIVE, STAGE_TRIPLET)
CHECKPOINT_FORMAT = 1


def training_checkpoint(model, config, stage, metrics, fingerprint, weights_source, epoch, best, history, optimizer,
                        scheduler, generator, options) -> dict:
    """The checkpoint dict of one epoch (layout above); ``options`` is the run's ``TrainOptions``."""
    return {
        "format": CHECKPOINT_FORMAT, "config": config.name, "stage": stage, "classes": list(CODES),
        "channels": model.in_chans, "weights": model.state_dict(), "metrics": metrics, "history": list(history),
        "data_fingerprint": fingerprint, "weights_source": weights_source, "epoch": epoch, "best_metric": best,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
        "loader_rng": generator.get_state(), "seed": options.seed, "epochs": options.epochs,
        "batch_size": options.batch_size, "schedule": options.schedule,
        **({"saliency": options.saliency_options, "stem_init": options.stem_init} if stage == STAGE_4CH else {}),
    }


def save_epoch_checkpoint(payload: dict, last_path: Path, best_path: Path, *, improved: bool) -> None:
    """An epoch's checkpoint as ``last_path`` (what a resume reads) and, when the epoch is the best
    so far, also as ``best_path`` (what the run keeps)."""
    torch.save(payload, last_path)
    if improved:
        torch.save(payload, best_path)


def end_epoch(payload: dict, metrics: dict, last_path: Path, best_path: Path, *, improved: bool,
              on_epoch=None) -> None:
    """Close a training epoch: save its checkpoint (:func:`save_epoch_checkpoint`), then hand its
    metrics to ``on_epoch`` (a job's progress), when given."""
    save_epoch_checkpoint(payload, last_path, best_path, improved=improved)
    if on_epoch:
        on_epoch(metrics)


def resume_checkpoint(path: Path, *, stage: str, config_name: str, fingerprint: str, model, optimizer, scheduler,
                      generator, recorded: dict[str, tuple] | None = None) -> tuple[int, float, list[dict]]:
    """Load an interrupted run's ``<stage>-last.pt`` into the model, optimizer, scheduler and random
    generators of a new one; returns (the epoch to start at, the best metric so far, the history).
    ``ValueError`` when the checkpoint is of another stage, config or data, or (``recorded``: keys
    to (the value the checkpoint must hold, the value a checkpoint without the key stands for)) was
    trained differently."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("stage") != stage or state.get("config") != config_name:
        raise ValueError(f"{path} is a {state.get('config')} {state.get('stage')} checkpoint, not {config_name} {stage}")
    if state["data_fingerprint"] != fingerprint:
        raise ValueError(f"{path} was trained on different data (fingerprint mismatch); start a new run")
    for key, (value, absent) in (recorded or {}).items():
        if state.get(key, absent) != value:
            raise ValueError(f"{path} was trained with {key} {state.get(key, absent)!r}, not {value!r}")
    model.load_state_dict(state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["loader_rng"])
    return state["epoch"] + 1, state["best_metric"], state["history"]


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's dict, on the CPU; ``ValueError`` when the file is not a LesionSearch checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a LesionSearch checkpoint (format {state.get('format')!r})")
    return state


def checkpoint_digest(path: Path) -> str:
    """The SHA-256 of a checkpoint file (what a ModelVersion stores and a saliency cache is named by)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: Path, *, device: str | torch.device = "cpu") -> SECBIRNet:
    """A classifier from a checkpoint (no ImageNet weights are loaded: the checkpoint has all weights)."""
    state = read_checkpoint(path)
    if state.get("stage") in EMBEDDING_STAGES:
        raise ValueError(f"{path} is a {state['stage']} embedding, not a classifier; load it with "
                         "retrieval.ml.embedding.load_embedding")
    config = get_config(state["config"])
    model = build_model(config, pretrained=False)
    if state["channels"] == 4:
        model = widen_to_saliency(model)
    model.load_state_dict(state["weights"])
    model.weights_source = state.get("weights_source", "")
    return model.to(device).eval()
