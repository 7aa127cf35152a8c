"""The training losses: class-weighted cross-entropy, over a corpus's own classes when a
corpus labels only some of the model's, and distillation towards a teacher's soft targets.

A clip of a corpus without ``calm`` (nEMO) says nothing about whether it sounds calm, so
its loss is the cross-entropy of the softmax over the classes its corpus has: the other
logits are left out, never pushed down. With every class allowed this is exactly
``F.cross_entropy`` with the same weights and label smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Batch:
    """One training batch on the device: inputs, labels, and what each sample's loss needs
    beyond its label (``allowed``: (N, classes) bool, the classes its corpus labels;
    ``soft``: (N, classes) a teacher's probabilities)."""

    x: torch.Tensor
    y: torch.Tensor
    allowed: torch.Tensor | None = None
    soft: torch.Tensor | None = None


def partial_cross_entropy(
    logits: torch.Tensor,
    y: torch.Tensor,
    allowed: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of each sample over its ``allowed`` classes only (smoothing spread
    over those classes), weighted like ``F.cross_entropy``: sum(w_y * loss) / sum(w_y)."""
    masked = logits.masked_fill(~allowed, float("-inf"))
    logp = torch.log_softmax(masked, dim=1)
    w = torch.ones(logits.shape[1], device=logits.device) if weight is None else weight
    nll = -logp.gather(1, y[:, None])[:, 0]
    wy = w[y]
    # F.cross_entropy's smoothing term: -sum_c w_c log p_c / C, here over the allowed c
    safe = logp.masked_fill(~allowed, 0.0)
    smooth = -(safe * w[None, :]).sum(1) / allowed.sum(1)
    per = (1 - label_smoothing) * wy * nll + label_smoothing * smooth
    return per.sum() / wy.sum()


def distillation(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature`` (teacher probabilities sharpened or
    softened to the same temperature), times T^2 so its gradients keep their scale."""
    t = temperature
    teacher = soft.clamp_min(1e-8).log() / t
    return (
        F.kl_div(
            torch.log_softmax(logits / t, 1),
            torch.log_softmax(teacher, 1),
            log_target=True,
            reduction="batchmean",
        )
        * t
        * t
    )


def batch_loss(
    logits: torch.Tensor,
    batch: Batch,
    weight: torch.Tensor,
    label_smoothing: float,
    distill_weight: float = 0.0,
    distill_temperature: float = 1.0,
) -> torch.Tensor:
    """The loss of one batch: cross-entropy (partial where the batch says so), blended with
    distillation when the batch carries a teacher's targets."""
    logits = logits.float()
    if batch.allowed is None:
        ce = F.cross_entropy(logits, batch.y, weight=weight, label_smoothing=label_smoothing)
    else:
        ce = partial_cross_entropy(logits, batch.y, batch.allowed, weight, label_smoothing)
    if batch.soft is None or distill_weight <= 0:
        return ce
    kd = distillation(logits, batch.soft, distill_temperature)
    return (1 - distill_weight) * ce + distill_weight * kd
