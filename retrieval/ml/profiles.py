"""Named training profiles: how long and how fast each SE-CBIR stage trains.

* ``thesis``: the thesis recipe (section 3.3): 20 epochs per stage, batch 32, learning rate
  ramped from 1x to 6x over 5 epochs, then x0.8 per epoch; on the offline default config
  ``secbir-lite0`` (``--config secbir-b4`` for the thesis's backbone).
* ``demo``: what ``make run`` trains on the synthetic demo library so that a first run on a
  2-core CPU machine finishes in minutes: ``secbir-lite0-fast`` (Lite0 at 128 px), 4 epochs of
  the 3-channel and 3 of the 4-channel model, starting at the 6x peak without the ramp (a
  5-epoch ramp would end after the run) and decaying x0.8 per epoch. Measured figures and the
  alternatives tried: docs/retrieval.md, "Demo training profile".

Both also give epochs for the metric-learning embeddings (``contrastive``, ``triplet``:
``retrieval/ml/embedding.py``): 20 (thesis), 3 (demo); a profile that names none trains them for
its 3-channel epochs.

A profile fixes epochs per stage, batch size and schedule; everything else (seed, device,
learning rates, progress bars) comes from the caller, and explicit values override the profile.
Use :func:`profile_options` for one stage or :meth:`TrainingProfile.stage_options` for the
per-stage options that ``retrieval.services.model_train`` accepts.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

from retrieval.ml.checkpoints import EMBEDDING_STAGES, STAGE_3CH, STAGE_4CH, STAGE_CONTRASTIVE, STAGE_TRIPLET, STAGES
from retrieval.ml.configs import get_config
from retrieval.ml.schedule import BATCH_SIZE, DECAY, EPOCHS, PEAK_MULTIPLIER, RAMP_EPOCHS, check_schedule
from retrieval.ml.train import TrainOptions

ALL_STAGES = STAGES + EMBEDDING_STAGES


@dataclass(frozen=True)
class TrainingProfile:
    name: str
    config: str  # the model config the profile is meant for (train_model's default --config)
    epochs: Mapping[str, int]  # per stage: 3ch and 4ch required; contrastive/triplet default to the 3ch epochs
    batch_size: int = BATCH_SIZE
    ramp_epochs: int = RAMP_EPOCHS
    peak: float = PEAK_MULTIPLIER
    decay: float = DECAY
    description: str = ""

    def __post_init__(self) -> None:
        get_config(self.config)  # KeyError naming the known configs
        if not set(STAGES) <= set(self.epochs) or min(self.epochs.values()) < 1:
            raise ValueError(f"profile {self.name}: epochs must give at least 1 for each of {STAGES}")
        unknown = sorted(set(self.epochs) - set(ALL_STAGES))
        if unknown:
            raise ValueError(f"profile {self.name}: unknown stage(s) {', '.join(unknown)} in epochs")
        if self.batch_size < 1:
            raise ValueError(f"profile {self.name}: batch_size must be at least 1")
        check_schedule(self.ramp_epochs, self.peak, self.decay)
        object.__setattr__(self, "epochs", MappingProxyType(dict(self.epochs)))

    def options(self, stage: str, **overrides) -> TrainOptions:
        """The ``TrainOptions`` of ``stage``; keyword arguments (any TrainOptions field) override it."""
        if stage not in ALL_STAGES:
            raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(ALL_STAGES)}")
        known = {f.name for f in fields(TrainOptions)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"not training options: {', '.join(unknown)}")
        values = {"epochs": self.epochs.get(stage, self.epochs[STAGE_3CH]), "batch_size": self.batch_size,
                  "ramp_epochs": self.ramp_epochs, "peak": self.peak, "decay": self.decay}
        values.update(overrides)
        return TrainOptions(**values)

    def stage_options(self, stages: Iterable[str], **overrides) -> dict[str, TrainOptions]:
        """``{stage: TrainOptions}`` for ``stages`` (the form ``model_train`` takes for per-stage options)."""
        return {stage: self.options(stage, **overrides) for stage in stages}


THESIS = TrainingProfile(
    name="thesis", config="secbir-lite0",
    epochs={STAGE_3CH: EPOCHS, STAGE_4CH: EPOCHS, STAGE_CONTRASTIVE: EPOCHS, STAGE_TRIPLET: EPOCHS},
    description="the thesis recipe: 20 epochs per stage, batch 32, 5-epoch ramp to 6x, then x0.8 per epoch",
)
DEMO = TrainingProfile(
    name="demo", config="secbir-lite0-fast",
    epochs={STAGE_3CH: 4, STAGE_4CH: 3, STAGE_CONTRASTIVE: 3, STAGE_TRIPLET: 3},
    ramp_epochs=0, peak=6.0, decay=0.8,
    description="the make-run demo: Lite0 at 128 px, 4 + 3 epochs, starting at the 6x peak, then x0.8 per epoch",
)

TRAINING_PROFILES: Mapping[str, TrainingProfile] = MappingProxyType({p.name: p for p in (THESIS, DEMO)})
DEFAULT_PROFILE = THESIS.name


def get_profile(name: str) -> TrainingProfile:
    try:
        return TRAINING_PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown training profile {name!r}; known: {', '.join(TRAINING_PROFILES)}") from None


def profile_options(name: str, stage: str, seed: int = 0, **overrides) -> TrainOptions:
    """The ``TrainOptions`` of ``stage`` under profile ``name`` (train with ``get_profile(name).config``)."""
    return get_profile(name).options(stage, seed=seed, **overrides)
