"""Saliency maps: vanilla gradient (the thesis's choice) and integrated gradients.

Vanilla gradient (Simonyan et al.): |d S_c / d I| at the input, where S_c is the class score
(the logit, before softmax), reduced over colour channels by the maximum and scaled to [0, 1]
per image. Library images use their ground-truth class, queries the predicted class.
Gradients are taken with respect to the input only: the model's parameters are frozen for
the pass, so no parameter gradients are computed or accumulated.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn

VANILLA = "vanilla"
INTEGRATED = "integrated"
SALIENCY_METHODS = (VANILLA, INTEGRATED)
BASELINES = ("black", "grey")
DEFAULT_IG_STEPS = 32
DEFAULT_IG_BASELINE = "black"
_EPS = 1e-12


def saliency_record(method: str = VANILLA, ig_steps: int = DEFAULT_IG_STEPS, ig_baseline: str = DEFAULT_IG_BASELINE
                    ) -> dict:
    """``{"method": ...}`` (plus ``ig_steps`` and ``ig_baseline`` for integrated gradients): how a
    4-channel model's saliency maps are made, as its checkpoint and ModelVersion record it;
    evaluation and indexing must make them the same way."""
    if method == INTEGRATED:
        return {"method": INTEGRATED, "ig_steps": int(ig_steps), "ig_baseline": ig_baseline}
    return {"method": method}


@contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients for the duration; restores both afterwards."""
    states = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p, _ in states:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in states:
            p.requires_grad_(flag)
        model.train(was_training)


def _normalise(raw: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) attributions -> (N, H, W) in [0, 1]: |.|, max over channels, min-max per image."""
    reduced = raw.abs().amax(dim=1)
    flat = reduced.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    return ((reduced - low[:, None, None]) / (high - low + _EPS)[:, None, None]).clamp(0, 1)


def _input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """d S_target / d x and the logits, from one forward and one backward pass.

    ``target`` None takes the predicted class of that same forward pass.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if target is None:
            target = logits.detach().argmax(dim=1)
        score = logits.gather(1, target[:, None]).sum()  # samples are independent: one backward pass
        (grad,) = torch.autograd.grad(score, x)
    return grad, logits.detach()


def vanilla_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
                     *, return_logits: bool = False):
    """Saliency maps (N, H, W) in [0, 1] and the predicted classes (N,) for normalised inputs x.

    ``target`` None means: explain the predicted class. With ``return_logits`` the logits of
    the same forward pass come third, so callers need no extra forward pass for probabilities.
    """
    with frozen(model):
        grad, logits = _input_gradient(model, x, target)
    if return_logits:
        return _normalise(grad), logits.argmax(dim=1), logits
    return _normalise(grad), logits.argmax(dim=1)


def baseline_like(x: torch.Tensor, kind: str, mean, std) -> torch.Tensor:
    """A black or grey image in the model's normalised input space."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; use one of {BASELINES}")
    level = 0.0 if kind == "black" else 0.5
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return ((level - mean_t) / std_t).expand_as(x)


def integrated_gradients_raw(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, steps: int = DEFAULT_IG_STEPS,
                             baseline: str = "black", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al.), (N, C, H, W), by a midpoint Riemann sum of ``steps`` steps.

    Their sum over pixels approximates S_c(x) - S_c(baseline) (completeness).
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    with frozen(model):
        base = baseline_like(x, baseline, mean, std)
        total = torch.zeros_like(x)
        for step in range(steps):
            alpha = (step + 0.5) / steps
            grad, _ = _input_gradient(model, base + alpha * (x - base), target)
            total += grad
    return (x - base) * total / steps


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
                         steps: int = DEFAULT_IG_STEPS, baseline: str = "black", mean=(0.5, 0.5, 0.5),
                         std=(0.5, 0.5, 0.5)) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated-gradient saliency maps (N, H, W) in [0, 1] and the predicted classes (N,)."""
    with frozen(model), torch.no_grad():
        predicted = model(x).argmax(dim=1)
    target = predicted if target is None else target
    raw = integrated_gradients_raw(model, x, target, steps=steps, baseline=baseline, mean=mean, std=std)
    return _normalise(raw), predicted


def available_memory_mb() -> int:
    """MemAvailable from /proc/meminfo (Linux); a conservative 2 GB elsewhere."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 2048


def saliency_batch_size(mb_per_image: int, device: torch.device | str = "cpu", *, budget_fraction: float = 0.4,
                        maximum: int = 64) -> int:
    """A batch size whose saliency pass fits in a fraction of the free memory of the device."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        free_mb = free // (1024 * 1024)
    else:
        free_mb = available_memory_mb()
    override = os.environ.get("LESIONSEARCH_SALIENCY_BATCH")
    if override:
        return max(1, int(override))
    return int(max(1, min(maximum, free_mb * budget_fraction // max(mb_per_image, 1))))
