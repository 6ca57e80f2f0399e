"""The thesis's "adaptive learning rate" and learning-rate schedule (section 3.3).

* Adaptive learning rate: every layer trains from the start, but the new or changed layers
  (new head; for the 4-channel model also the widened input conv) use ``factor`` times the
  base learning rate, so the pretrained layers move only slightly.
* Schedule, per epoch, as a multiplier of each group's initial learning rate::

      m(e) = 1 + (peak - 1) * e / ramp_epochs        for 0 <= e <= ramp_epochs
      m(e) = peak * decay ** (e - ramp_epochs)       for e > ramp_epochs

  i.e. a linear ramp from 1x to 6x over five epochs, then exponential decay by 0.8 per epoch.
  One multiplier for all groups keeps their ratio (``factor``) fixed throughout.

  ``ramp_epochs``, ``peak`` and ``decay`` are parameters (defaults: the thesis's 5, 6 and 0.8),
  so that a short run (the demo profile, ``retrieval/ml/profiles.py``: ``ramp_epochs = 0``)
  can start at its peak instead of ending mid-ramp.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

RAMP_EPOCHS = 5
PEAK_MULTIPLIER = 6.0
DECAY = 0.8
BATCH_SIZE = 32
EPOCHS = 20

GROUP_PRETRAINED = "pretrained"
GROUP_NEW = "new"


@dataclass(frozen=True)
class LearningRates:
    """A base learning rate and the adaptive factor for the new/changed layers."""

    base_lr: float
    factor: float

    @property
    def new_lr(self) -> float:
        return self.base_lr * self.factor


#: Thesis: 3-channel classifier, new head starts at 5e-5 * 200 = 1e-2.
THREE_CHANNEL_LR = LearningRates(base_lr=5e-5, factor=200.0)
#: Thesis: 4-channel fine-tuning, new input conv and first head layer start at 1e-5 * 100 = 1e-3.
FOUR_CHANNEL_LR = LearningRates(base_lr=1e-5, factor=100.0)


def lr_multiplier(epoch: int, ramp_epochs: int = RAMP_EPOCHS, peak: float = PEAK_MULTIPLIER,
                  decay: float = DECAY) -> float:
    """Multiplier of the initial learning rate at ``epoch`` (0-based); formula in the module docstring.

    With the defaults: epoch 0 -> 1, 1 -> 2, 5 -> 6, 6 -> 4.8, 10 -> 6 * 0.8**5 = 1.96608.
    ``ramp_epochs = 0`` starts at ``peak`` directly; ``ramp_epochs = 1`` gives 1 at epoch 0,
    ``peak`` at epoch 1, then ``peak * decay ** (epoch - 1)``.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    check_schedule(ramp_epochs, peak, decay)
    if epoch < ramp_epochs:
        return 1.0 + (peak - 1.0) * epoch / ramp_epochs
    return peak * decay ** (epoch - ramp_epochs)


def check_schedule(ramp_epochs: int, peak: float, decay: float) -> None:
    """Raise ``ValueError`` unless ramp_epochs >= 0, peak > 0 and 0 < decay <= 1."""
    if ramp_epochs < 0:
        raise ValueError(f"ramp_epochs must be >= 0, got {ramp_epochs}")
    if not peak > 0:
        raise ValueError(f"the peak multiplier must be positive, got {peak}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")


def param_groups(model: nn.Module, new_param_names: set[str] | Callable[[str], bool], base_lr: float,
                 factor: float) -> list[dict]:
    """Optimizer parameter groups for the adaptive learning rate.

    ``new_param_names`` selects the new/changed parameters, either as a predicate on the
    parameter name or as a set of names, where an entry is a parameter name (``"head.3.weight"``)
    or a module prefix (``"head"`` selects every parameter under ``head.``). Those get
    ``base_lr * factor`` (group ``"new"``), all other trainable parameters ``base_lr`` (group
    ``"pretrained"``). Frozen parameters are left out; every trainable parameter is in exactly one
    group. Each group carries ``"lr"``, ``"initial_lr"`` and ``"name"``; an empty pretrained group
    (everything else frozen) is omitted.

    Raises ``ValueError`` when a set entry matches no trainable parameter (a typo would otherwise
    silently train the new layers at the small rate) or when nothing is selected as new.
    """
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    if callable(new_param_names):
        is_new = new_param_names
    else:
        wanted = set(new_param_names)
        unmatched = {entry for entry in wanted
                     if not any(name == entry or name.startswith(entry + ".") for name, _ in named)}
        if unmatched:
            raise ValueError(f"no trainable parameter matches {sorted(unmatched)}")

        def is_new(name: str) -> bool:
            return any(name == entry or name.startswith(entry + ".") for entry in wanted)

    new = [param for name, param in named if is_new(name)]
    pretrained = [param for name, param in named if not is_new(name)]
    if not new:
        raise ValueError("no trainable parameter was selected as new")
    groups = []
    if pretrained:
        groups.append({"name": GROUP_PRETRAINED, "params": pretrained, "lr": base_lr, "initial_lr": base_lr})
    new_lr = base_lr * factor
    groups.append({"name": GROUP_NEW, "params": new, "lr": new_lr, "initial_lr": new_lr})
    return groups


def make_scheduler(optimizer: Optimizer, ramp_epochs: int = RAMP_EPOCHS, peak: float = PEAK_MULTIPLIER,
                   decay: float = DECAY) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_multiplier` to every group; call ``step()`` once per epoch.

    Raises ``ValueError`` for an invalid schedule before any step is taken.
    """
    check_schedule(ramp_epochs, peak, decay)
    return LambdaLR(optimizer, lr_lambda=partial(lr_multiplier, ramp_epochs=ramp_epochs, peak=peak, decay=decay))
