"""The training loop: seeded, early-stopped on a held-out part of train, one checkpoint.

SGD with Nesterov momentum, linear warm-up then cosine decay per step, label smoothing and
class-weighted cross-entropy; batches augmented on the fly (:mod:`face_augment`). The best
epoch by held-out accuracy is kept; val is not looked at here, so the final val figure of
the evaluation stage is a clean estimate. ``on_epoch`` gets every epoch's figures (MLflow
logs them, Optuna prunes on them).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from emostream.training.face_augment import augment
from emostream.training.face_config import TrainConfig
from emostream.training.face_data import Split
from emostream.training.face_net import EmotionNet, Served, to_input
from emostream.training.fer2013 import CLASSES

EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_precision(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_bf16() else "fp32"


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


def class_weights(split: Split, mode: str) -> torch.Tensor:
    counts = np.bincount(split.labels, minlength=len(CLASSES)).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    if mode == "none":
        w = np.ones_like(counts)
    else:
        w = 1.0 / np.sqrt(counts) if mode == "sqrt" else 1.0 / counts
    w *= counts.sum() / (counts * w).sum()  # the mean weight per face stays 1
    return torch.tensor(w, dtype=torch.float32)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, 48, 48) -> the network's input on ``device``, channels-last."""
    t = to_input(torch.from_numpy(images).to(device))
    return t.contiguous(memory_format=torch.channels_last)


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: Path, progress: bool = True) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.progress = progress
        self.device = pick_device(cfg)
        self.precision = pick_precision(cfg, self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def build(self) -> EmotionNet:
        n = self.cfg.net
        net = EmotionNet(len(CLASSES), n.width, n.dropout).to(self.device)
        return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]

    @torch.no_grad()
    def predict(self, net: EmotionNet, images: np.ndarray, batch: int = 512) -> np.ndarray:
        """(N, classes) probabilities (no flip: the checkpoint's own view, for selection)."""
        net.eval()
        out = []
        for i in range(0, len(images), batch):
            with self._autocast():
                logits = net(to_tensor(images[i : i + batch], self.device))
            out.append(torch.softmax(logits.float(), 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)

    def fit(self, train: Split, on_epoch: EpochHook | None = None) -> TrainResult:
        cfg, opt_cfg = self.cfg, self.cfg.optim
        gen = seed_everything(cfg.seed)
        fit_split, held = holdout_split(train, cfg.data.holdout, cfg.seed)
        net = self.build()
        decay = [p for n, p in net.named_parameters() if p.ndim > 1]
        rest = [p for n, p in net.named_parameters() if p.ndim <= 1]
        groups: list[dict[str, Any]] = [
            {"params": decay, "weight_decay": opt_cfg.weight_decay},
            {"params": rest},
        ]
        opt = torch.optim.SGD(
            groups,
            lr=opt_cfg.lr,
            momentum=opt_cfg.momentum,
            nesterov=opt_cfg.momentum > 0,
        )
        steps_per_epoch = max(1, math.ceil(len(fit_split) / opt_cfg.batch_size))
        total = steps_per_epoch * opt_cfg.epochs
        warm = int(opt_cfg.warmup_epochs * steps_per_epoch)

        def lr_at(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        weights = class_weights(fit_split, opt_cfg.class_weights).to(self.device)
        images = torch.from_numpy(fit_split.images)
        labels = torch.from_numpy(fit_split.labels)
        ckpt = self.out_dir / "checkpoint.pt"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        result = TrainResult(ckpt, 0, {}, device=str(self.device), precision=self.precision)
        started, stale = time.monotonic(), 0
        for epoch in range(1, opt_cfg.epochs + 1):
            net.train()
            order = torch.randperm(len(labels), generator=gen)
            seen = correct = 0
            loss_sum = 0.0
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"epoch {epoch}/{opt_cfg.epochs}",
                unit="batch",
                disable=not self.progress,
                leave=False,
            )
            for s in bar:
                idx = order[s * opt_cfg.batch_size : (s + 1) * opt_cfg.batch_size]
                x = augment(to_input(images[idx]), cfg.augment, gen).to(self.device)
                x = x.contiguous(memory_format=torch.channels_last)
                y = labels[idx].to(self.device)
                with self._autocast():
                    logits = net(x)
                loss = F.cross_entropy(
                    logits.float(), y, weight=weights, label_smoothing=opt_cfg.label_smoothing
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                sched.step()
                seen += len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                loss_sum += loss.item() * len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            figures = {
                "train_loss": loss_sum / max(1, seen),
                "train_accuracy": correct / max(1, seen),
                "lr": float(sched.get_last_lr()[0]),
                "seconds": time.monotonic() - started,
            }
            if held is not None and len(held):
                probs = self.predict(net, held.images)
                figures["holdout_accuracy"] = float((probs.argmax(1) == held.labels).mean())
            score = figures.get("holdout_accuracy", figures["train_accuracy"])
            result.history.append({"epoch": float(epoch), **figures})
            if epoch == 1 or score > result.best.get("score", -1.0):
                result.best_epoch, result.best = epoch, {**figures, "score": score}
                stale = 0
                torch.save(
                    {
                        "state_dict": net.state_dict(),
                        "config": cfg.model_dump(mode="json"),
                        "classes": list(CLASSES),
                        "epoch": epoch,
                    },
                    ckpt,
                )
            else:
                stale += 1
            if self.progress:
                tqdm.write(
                    f"epoch {epoch}: loss {figures['train_loss']:.3f} train acc "
                    f"{figures['train_accuracy']:.4f} holdout acc {score:.4f} "
                    f"({figures['seconds']:.0f} s){' *' if stale == 0 else ''}"
                )
            if on_epoch is not None:
                on_epoch(epoch, figures)
            if stale >= opt_cfg.patience:
                break
        result.seconds = time.monotonic() - started
        return result


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
