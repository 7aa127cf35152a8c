"""Batch augmentation on tensors: one affine warp, flip, photometric jitter and erasing.

Done on the whole batch at once (``affine_grid`` + ``grid_sample``) rather than per image in
DataLoader workers: on a 2-core machine the per-image Python loop would cost more than the
network. Every draw comes from the generator passed in, so a seeded run is reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from emostream.training.face_config import AugmentConfig


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(N, 1, H, W) floats in [0, 1] -> augmented copy (same shape, same range)."""
    n = x.shape[0]
    angle = _uniform(n, -cfg.rotate, cfg.rotate, gen) * (math.pi / 180)
    zoom = _uniform(n, 1 - cfg.scale, 1 + cfg.scale, gen)
    mirror = (
        torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)
    )
    tx = _uniform(n, -2 * cfg.shift, 2 * cfg.shift, gen)  # grid units span 2 per side
    ty = _uniform(n, -2 * cfg.shift, 2 * cfg.shift, gen)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen).view(n, 1, 1, 1)
    bias = _uniform(n, -cfg.brightness, cfg.brightness, gen).view(n, 1, 1, 1) * 0.5
    mean = out.mean(dim=(2, 3), keepdim=True)
    out = ((out - mean) * gain + mean + bias).clamp(0, 1)
    if cfg.erase > 0:
        out = _erase(out, cfg.erase, gen)
    return out


def _erase(x: torch.Tensor, chance: float, gen: torch.Generator) -> torch.Tensor:
    """Random erasing: a rectangle of 2-25 % of the face set to noise, on some faces."""
    n, _, h, w = x.shape
    area = _uniform(n, 0.02, 0.25, gen) * h * w
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), gen))
    eh = (area * aspect).sqrt().clamp(1, h - 1)
    ew = (area / aspect).sqrt().clamp(1, w - 1)
    y0 = torch.rand(n, generator=gen) * (h - eh)
    x0 = torch.rand(n, generator=gen) * (w - ew)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    box = (
        (ys >= y0.view(n, 1, 1))
        & (ys < (y0 + eh).view(n, 1, 1))
        & (xs >= x0.view(n, 1, 1))
        & (xs < (x0 + ew).view(n, 1, 1))
    )
    box &= (torch.rand(n, generator=gen) < chance).view(n, 1, 1)
    noise = torch.rand(x.shape, generator=gen)
    return torch.where(box.unsqueeze(1), noise, x)
