"""The voice training loop: augmented random windows of each clip for the shared loop.

Every epoch takes ``crops_per_clip`` random 1.5 s windows of each training clip, augments
the waveform (:func:`voice_augment.augment_wave`), computes the numpy log-mel serving uses,
then masks bands and frames (SpecAugment). The best epoch is chosen by clip accuracy on the
validation speakers; the test speakers are not looked at until the evaluation stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emostream.training.loop import (
    EpochHook,
    TrainerBase,
    TrainResult,
    autocast,
    class_weights,
    fit_loop,
    seed_everything,
)
from emostream.training.losses import Batch
from emostream.training.prefetch import prefetch
from emostream.training.voice_augment import augment_wave, spec_augment, speed_window
from emostream.training.voice_config import VoiceTrainConfig
from emostream.training.voice_data import CLASSES
from emostream.training.voice_net import Served, VoiceNet
from emostream.training.voice_windows import (
    WINDOW,
    Prepared,
    Windows,
    all_windows,
    clip_mean,
    features,
    random_window,
)


def build(cfg: VoiceTrainConfig) -> VoiceNet:
    return VoiceNet(len(CLASSES), cfg.net.width, cfg.net.stages, cfg.net.dropout)


def _fast(x: torch.Tensor) -> torch.Tensor:
    """Channels-last: with bf16 on this CPU a training step takes 0.25 s a batch of 64
    against 0.39 s in the default layout."""
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(
    net: nn.Module,
    inputs: np.ndarray,
    device: torch.device,
    precision: str = "fp32",
    softmax: bool = True,
    batch: int = 256,
) -> np.ndarray:
    """(N, classes) probabilities of (N, 1, mels, frames) windows."""
    net.eval()
    out = []
    for i in range(0, len(inputs), batch):
        with autocast(device, precision):
            y = net(_fast(torch.from_numpy(inputs[i : i + batch]).to(device))).float()
        out.append((torch.softmax(y, 1) if softmax else y).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def scores(probs: np.ndarray, windows: Windows, clips: int, labels: np.ndarray) -> dict[str, float]:
    per_clip = clip_mean(probs, windows.clip, clips)
    return {
        "window_accuracy": float((probs.argmax(1) == windows.labels).mean()),
        "clip_accuracy": float((per_clip.argmax(1) == labels).mean()),
    }


def draw_weights(train: Prepared, balance: float) -> np.ndarray | None:
    """Each clip's chance of being drawn, n_corpus^-balance normalised; None when every
    clip is alike (a shuffled pass, as a single corpus always is)."""
    corpora = [c.corpus for c in train.clips]
    sizes = {k: corpora.count(k) for k in set(corpora)}
    if balance <= 0 or len(sizes) < 2:
        return None
    w = np.array([sizes[k] ** -balance for k in corpora], np.float64)
    out: np.ndarray = w / w.sum()
    return out


def _window(
    train: Prepared, i: int, shift: int, rng: np.random.Generator, speeds: list[float]
) -> np.ndarray:
    """A random window of clip ``i`` at a random one of ``speeds`` (no draw when only 1.0,
    so a run without speed perturbation draws what it always drew)."""
    wave, span = train.waves[i], train.spans[i]
    speed = speeds[0] if len(speeds) == 1 else float(rng.choice(speeds))
    return speed_window(lambda n: random_window(wave, span, shift, rng, n), speed, WINDOW)


class VoiceTrainer(TrainerBase[VoiceTrainConfig]):
    def fit(
        self,
        train: Prepared,
        val: Prepared | None,
        on_epoch: EpochHook | None = None,
        meta: dict[str, Any] | None = None,
    ) -> TrainResult:
        """Fit (or go on with a stopped fit: ``last.pt``); ``meta`` is kept in ``last.pt``."""
        cfg, opt_cfg = self.cfg, self.cfg.optim
        gen = seed_everything(cfg.seed)
        net = build(cfg).to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        shift = round(cfg.augment.shift * 16000)
        pairs = cfg.data.epoch_windows or len(train) * cfg.data.crops_per_clip
        steps = max(1, math.ceil(pairs / opt_cfg.batch_size))
        held = None if val is None or not len(val) else all_windows(val)
        chance = draw_weights(train, cfg.data.corpus_balance)
        speeds = cfg.augment.speeds

        def batches(g: torch.Generator) -> Iterator[Batch]:
            return prefetch(make(g))

        def make(g: torch.Generator) -> Iterator[Batch]:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            if chance is None:
                order = rng.permutation(pairs) % len(train)
            else:
                order = rng.choice(len(train), size=pairs, p=chance)
            for s in range(steps):
                idx = order[s * opt_cfg.batch_size : (s + 1) * opt_cfg.batch_size]
                waves = np.stack(
                    [
                        augment_wave(_window(train, i, shift, rng, speeds), cfg.augment, rng)
                        for i in idx
                    ]
                )
                x = spec_augment(torch.from_numpy(features(waves)), cfg.augment, g)
                mask = torch.from_numpy(train.allowed[idx]) if train.partial else None
                yield Batch(
                    _fast(x.to(self.device)),
                    torch.from_numpy(train.labels[idx]).to(self.device),
                    None if mask is None else mask.to(self.device),
                )

        def score(model: nn.Module) -> dict[str, float]:
            if held is None or val is None:
                return {}
            probs = predict(model, held.inputs, self.device, self.precision)
            got = scores(probs, held, len(val), val.labels)
            return {
                "holdout_accuracy": got["clip_accuracy"],
                **{f"holdout_{k}": v for k, v in got.items()},
            }

        return fit_loop(
            net,
            cfg,
            batches,
            steps,
            class_weights(train.labels, len(CLASSES), opt_cfg.class_weights),
            score,
            self.out_dir / "checkpoint.pt",
            {"config": cfg.model_dump(mode="json"), "classes": list(CLASSES)},
            device=self.device,
            precision=self.precision,
            generator=gen,
            progress=self.progress,
            on_epoch=on_epoch,
            meta=meta,
        )


def load_served(path: Path) -> tuple[Served, VoiceTrainConfig]:
    """The exported graph (CPU, fp32, eval) of a run's best checkpoint, and its config."""
    raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    cfg = VoiceTrainConfig.model_validate(raw["config"])
    net = build(cfg)
    net.load_state_dict(raw["state_dict"])
    return Served(net).eval(), cfg
