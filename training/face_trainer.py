"""The face training loop: FER2013 batches for the shared loop (:mod:`loop`).

Batches are augmented on the fly (:mod:`face_augment`); the best epoch by accuracy on a
stratified part of train held out is kept; val is not looked at here, so the final val
figure of the evaluation stage is a clean estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emostream.training.face_augment import augment
from emostream.training.face_config import TrainConfig
from emostream.training.face_data import Split
from emostream.training.face_net import EmotionNet, Served, to_input
from emostream.training.fer2013 import CLASSES
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

#: a teacher's probabilities (N, classes) for uint8 (N, 48, 48) faces (``distil.py``)
Teacher = Callable[[np.ndarray], np.ndarray]

__all__ = ["EpochHook", "TrainResult", "Trainer", "load_checkpoint", "load_served"]


def holdout_split(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Stratified: the same fraction of every class is held out."""
    if fraction <= 0:
        return train, None
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(train.labels == c)
        held.append(rng.permutation(idx)[: max(1, round(len(idx) * fraction))] if len(idx) else idx)
    mask = np.zeros(len(train), dtype=bool)
    mask[np.concatenate(held)] = True
    return train.take(np.flatnonzero(~mask)), train.take(np.flatnonzero(mask))


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, 48, 48) -> the network's input on ``device``, channels-last."""
    t = to_input(torch.from_numpy(images).to(device))
    return t.contiguous(memory_format=torch.channels_last)


class Trainer(TrainerBase[TrainConfig]):
    def build(self) -> EmotionNet:
        n = self.cfg.net
        net = EmotionNet(len(CLASSES), n.width, n.dropout).to(self.device)
        return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]

    @torch.no_grad()
    def predict(self, net: nn.Module, images: np.ndarray, batch: int = 512) -> np.ndarray:
        """(N, classes) probabilities (no flip: the checkpoint's own view, for selection)."""
        net.eval()
        out = []
        for i in range(0, len(images), batch):
            with autocast(self.device, self.precision):
                logits = net(to_tensor(images[i : i + batch], self.device))
            out.append(torch.softmax(logits.float(), 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)

    def fit(
        self,
        train: Split,
        on_epoch: EpochHook | None = None,
        teacher: Teacher | None = None,
        meta: dict[str, Any] | None = None,
    ) -> TrainResult:
        """Train on ``train`` less its held-out part; with a ``teacher``, each face's loss
        also follows the teacher's probabilities for it (distillation). A stopped fit in
        the folder (``last.pt``) goes on where it stopped; ``meta`` is kept in ``last.pt``."""
        cfg, opt_cfg = self.cfg, self.cfg.optim
        gen = seed_everything(cfg.seed)
        fit_split, held = holdout_split(train, cfg.data.holdout, cfg.seed)
        soft = None if teacher is None else torch.from_numpy(teacher(fit_split.images))
        net = self.build()
        steps_per_epoch = max(1, math.ceil(len(fit_split) / opt_cfg.batch_size))
        images = torch.from_numpy(fit_split.images)
        labels = torch.from_numpy(fit_split.labels)

        def batches(g: torch.Generator) -> Iterator[Batch]:
            order = torch.randperm(len(labels), generator=g)
            for s in range(steps_per_epoch):
                idx = order[s * opt_cfg.batch_size : (s + 1) * opt_cfg.batch_size]
                x = augment(to_input(images[idx]), cfg.augment, g).to(self.device)
                x = x.contiguous(memory_format=torch.channels_last)
                targets = None if soft is None else soft[idx].to(self.device)
                yield Batch(x, labels[idx].to(self.device), soft=targets)

        def score(model: nn.Module) -> dict[str, float]:
            if held is None or not len(held):
                return {}
            probs = self.predict(model, held.images)
            return {"holdout_accuracy": float((probs.argmax(1) == held.labels).mean())}

        self.out_dir.mkdir(parents=True, exist_ok=True)
        return fit_loop(
            net,
            cfg,
            batches,
            steps_per_epoch,
            class_weights(fit_split.labels, len(CLASSES), opt_cfg.class_weights),
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


def load_checkpoint(path: Path) -> tuple[EmotionNet, TrainConfig, dict[str, Any]]:
    """The best epoch's network (eval mode, CPU, fp32) and the config that trained it."""
    raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return _net(raw), TrainConfig.model_validate(raw["config"]), raw


def _net(raw: dict[str, Any]) -> EmotionNet:
    cfg = TrainConfig.model_validate(raw["config"])
    net = EmotionNet(len(raw["classes"]), cfg.net.width, cfg.net.dropout)
    net.load_state_dict(raw["state_dict"])
    return net.eval()


def save_ensemble(members: list[Path], out: Path) -> None:
    """One checkpoint holding several runs' best networks (``emostream train combine``)."""
    raws = [torch.load(p, map_location="cpu", weights_only=True) for p in members]
    if len({tuple(r["classes"]) for r in raws}) != 1:
        raise ValueError("the runs were trained on different classes")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"members": raws, "classes": raws[0]["classes"]}, out)


def load_served(path: Path) -> tuple[Served, TrainConfig, int]:
    """The graph to evaluate and export from a run's checkpoint (one run or an ensemble):
    the served module, the (first member's) config, and the number of members."""
    raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    members = raw.get("members", [raw])
    cfg = TrainConfig.model_validate(members[0]["config"])
    served = Served([_net(m) for m in members], cfg.net.tta_flip).eval()
    return served, cfg, len(members)
