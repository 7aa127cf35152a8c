"""The training losses: class-weighted cross-entropy, with a label that may mean several
of the model's classes, and distillation towards a teacher's soft targets.

Corpora label different class sets. nEMO has no ``calm``: an actor asked for a neutral
sentence may well sound calm, so its ``neutral`` means "neutral or calm" to the model. The
loss of such a label is -log of the probability of the set (the sum over its classes),
over the full softmax: the classes outside the set are still pushed down (a sad clip is not
calm in any corpus), and none of them drifts up unchecked, as they do when a corpus's
missing classes are simply masked out of the softmax. With one class per label this is
``F.cross_entropy`` with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Batch:
    """One training batch on the device: inputs, labels, and what each sample's loss needs
    beyond its label (``allowed``: (N, classes) bool, the classes its label may mean;
    ``soft``: (N, classes) a teacher's probabilities)."""

    x: torch.Tensor
    y: torch.Tensor
    allowed: torch.Tensor | None = None
    soft: torch.Tensor | None = None


def set_cross_entropy(
    logits: torch.Tensor,
    y: torch.Tensor,
    allowed: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """-log P(the label's set) per sample (``allowed``: (N, classes) bool, the classes each
    label may mean), label smoothing towards the uniform distribution, weighted like
    ``F.cross_entropy``: sum(w_y * loss) / sum(w_y)."""
    total = torch.logsumexp(logits, dim=1)
    inside = torch.logsumexp(logits.masked_fill(~allowed, float("-inf")), dim=1)
    uniform = total - logits.mean(dim=1)
    per = (1 - label_smoothing) * (total - inside) + label_smoothing * uniform
    w = torch.ones(logits.shape[1], device=logits.device) if weight is None else weight
    wy = w[y]
    return (wy * per).sum() / wy.sum()


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
    """The loss of one batch: cross-entropy (of label sets where the batch has them), blended with
    distillation when the batch carries a teacher's targets."""
    logits = logits.float()
    if batch.allowed is None:
        ce = F.cross_entropy(logits, batch.y, weight=weight, label_smoothing=label_smoothing)
    else:
        ce = set_cross_entropy(logits, batch.y, batch.allowed, weight, label_smoothing)
    if batch.soft is None or distill_weight <= 0:
        return ce
    kd = distillation(logits, batch.soft, distill_temperature)
    return (1 - distill_weight) * ce + distill_weight * kd
