"""The multi-class focal loss of the thesis (eq. 3.4 / 3.5), on softmax outputs.

For one sample with softmax probabilities ``p`` over ``M`` classes and ground truth ``y``::

    L = sum_i  -alpha_t,i * (1 - p_t,i) ** gamma * log(p_t,i)

    p_t,i     = p_i        if i == y else 1 - p_i
    alpha_t,i = alpha      if i == y else 1 - alpha

This is tf-addons' ``SigmoidFocalCrossEntropy`` applied to one-hot targets and softmax
probabilities (the "categorical focal loss" the thesis trained with). With ``alpha = 0.5`` and
``gamma = 0`` it is ``0.5 *`` the binary cross-entropy summed over the classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The thesis's (and Lin et al.'s) parameters.
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0

REDUCTIONS = ("mean", "sum", "none")


def _log_one_minus_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log(1 - softmax(logits))`` without cancellation: ``log(sum_{j != i} e^x_j) - logsumexp(x)``.

    ``log1p(-p)`` loses everything once ``p`` rounds to 1 (confident predictions, which are
    exactly the ones focal loss is about), so the complement is summed in log space instead.
    """
    classes = logits.shape[-1]
    eye = torch.eye(classes, dtype=torch.bool, device=logits.device)
    # Row i of the (N, C, C) tensor holds the logits with class i masked out.
    others = logits.unsqueeze(-2).expand(*logits.shape[:-1], classes, classes).masked_fill(eye, float("-inf"))
    return torch.logsumexp(others, dim=-1) - torch.logsumexp(logits, dim=-1, keepdim=True)


class FocalLoss(nn.Module):
    """Categorical focal loss on logits ``(N, C)`` and integer targets ``(N,)``.

    ``reduction``: ``"mean"`` (over samples of the per-sample sum over classes), ``"sum"`` or
    ``"none"`` (per-sample losses, shape ``(N,)``). Computed in log space, so it and its
    gradient stay finite for arbitrarily confident logits.
    """

    def __init__(self, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA, reduction: str = "mean") -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if gamma < 0.0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise ValueError(f"logits must have shape (N, C) with C >= 2, got {tuple(logits.shape)}")
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
        is_target = F.one_hot(targets.long(), logits.shape[1]).bool()
        log_p = F.log_softmax(logits, dim=1)
        log_not_p = _log_one_minus_softmax(logits)
        # eq. 3.5: on the ground-truth class x_t = x, elsewhere x_t = 1 - x.
        log_pt = torch.where(is_target, log_p, log_not_p)
        log_not_pt = torch.where(is_target, log_not_p, log_p)
        alpha_t = torch.where(is_target, self.alpha, 1.0 - self.alpha).to(logits.dtype)
        # (1 - p_t) ** gamma as exp(gamma * log(1 - p_t)): exact 1 for gamma = 0, no 0 ** 0 or 0 * inf.
        modulating = torch.exp(self.gamma * log_not_pt)
        per_sample = (-alpha_t * modulating * log_pt).sum(dim=1)
        if self.reduction == "mean":
            return per_sample.mean()
        if self.reduction == "sum":
            return per_sample.sum()
        return per_sample
