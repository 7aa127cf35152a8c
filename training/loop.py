"""The training loop every model shares: seeded, early-stopped, one best checkpoint.

Batches come from the modality (already augmented and on the device); the loop owns the
optimiser (SGD with Nesterov momentum or AdamW), linear warm-up then cosine decay per step,
label smoothing and class-weighted cross-entropy, bf16 autocast where the hardware has it,
the progress bar, early stopping on the held-out score, the checkpoint of the best epoch
and ``last.pt`` after every epoch, from which a stopped fit goes on (:mod:`resume`).
``on_epoch`` gets every epoch's figures (MLflow logs them, Optuna prunes on them).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from emostream.training import resume
from emostream.training.losses import Batch, batch_loss
from emostream.training.train_config import OptimConfig, RunConfig

EpochHook = Callable[[int, dict[str, float]], None]
#: one epoch's batches on the device, augmented
Batches = Callable[[torch.Generator], Iterable[Batch]]
#: held-out figures of the network after an epoch; "holdout_accuracy" is what selects
Scorer = Callable[[nn.Module], dict[str, float]]


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


def pick_device(cfg: RunConfig) -> torch.device:
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


def pick_precision(cfg: RunConfig, device: torch.device) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_bf16() else "fp32"


C = TypeVar("C", bound=RunConfig)


class TrainerBase(Generic[C]):
    """What every modality's trainer starts with: its config, where the run's files go,
    and the device, precision and CPU threads the config resolves to on this machine."""

    def __init__(self, cfg: C, out_dir: Path, progress: bool = True) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.progress = progress
        self.device = pick_device(cfg)
        self.precision = pick_precision(cfg, self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def class_weights(labels: np.ndarray, classes: int, mode: str) -> torch.Tensor:
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    if mode == "none":
        w = np.ones_like(counts)
    else:
        w = 1.0 / np.sqrt(counts) if mode == "sqrt" else 1.0 / counts
    w *= counts.sum() / (counts * w).sum()  # the mean weight per sample stays 1
    return torch.tensor(w, dtype=torch.float32)


def _optimizer(net: nn.Module, opt_cfg: OptimConfig) -> torch.optim.Optimizer:
    decay = [p for _, p in net.named_parameters() if p.ndim > 1]
    rest = [p for _, p in net.named_parameters() if p.ndim <= 1]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": opt_cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if opt_cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=opt_cfg.lr)
    return torch.optim.SGD(
        groups, lr=opt_cfg.lr, momentum=opt_cfg.momentum, nesterov=opt_cfg.momentum > 0
    )


def _schedule(
    opt: torch.optim.Optimizer, opt_cfg: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * opt_cfg.epochs
    warm = int(opt_cfg.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def fit_loop(
    net: nn.Module,
    cfg: RunConfig,
    batches: Batches,
    steps_per_epoch: int,
    weights: torch.Tensor,
    scorer: Scorer | None,
    checkpoint: Path,
    saved: dict[str, Any],
    *,
    device: torch.device,
    precision: str,
    generator: torch.Generator,
    progress: bool = True,
    on_epoch: EpochHook | None = None,
    meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``net`` for up to ``cfg.optim.epochs``; the best epoch by held-out accuracy
    (train accuracy without a scorer) is saved to ``checkpoint`` with ``saved`` beside
    ``state_dict`` and ``epoch``.

    Every finished epoch is saved as ``last.pt`` beside ``checkpoint`` (with ``meta``);
    when one is there for the same configuration, the fit goes on after its epoch."""
    opt_cfg = cfg.optim
    opt = _optimizer(net, opt_cfg)
    sched = _schedule(opt, opt_cfg, steps_per_epoch)
    weights = weights.to(device)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    result = TrainResult(checkpoint, 0, {}, device=str(device), precision=precision)
    last = checkpoint.with_name(resume.LAST)
    first, stale, elapsed = 1, 0, 0.0
    if (prior := resume.peek(checkpoint.parent, cfg)) is not None:
        first, stale, elapsed = _restore(prior, steps_per_epoch, net, opt, sched, generator, result)
    started = time.monotonic() - elapsed
    for epoch in range(first, opt_cfg.epochs + 1):
        if stale >= opt_cfg.patience:
            break
        net.train()
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(
            batches(generator),
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{opt_cfg.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for batch in bar:
            y = batch.y
            with autocast(device, precision):
                logits = net(batch.x)
            loss = batch_loss(
                logits,
                batch,
                weights,
                opt_cfg.label_smoothing,
                opt_cfg.distill_weight,
                opt_cfg.distill_temperature,
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
        if scorer is not None:
            figures.update(scorer(net))
        score = figures.get("holdout_accuracy", figures["train_accuracy"])
        result.history.append({"epoch": float(epoch), **figures})
        if epoch == 1 or score > result.best.get("score", -1.0):
            result.best_epoch, result.best = epoch, {**figures, "score": score}
            stale = 0
            state = {"state_dict": net.state_dict(), "epoch": epoch, **saved}
            resume.write(checkpoint, state)
        else:
            stale += 1
        resume.write(
            last,
            {
                "epoch": epoch,
                "config": cfg.model_dump(mode="json"),
                "steps_per_epoch": steps_per_epoch,
                "state_dict": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": resume.rng_state(generator),
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best": result.best,
                "stale": stale,
                "seconds": figures["seconds"],
                "meta": meta or {},
            },
        )
        if progress:
            tqdm.write(
                f"epoch {epoch}: loss {figures['train_loss']:.3f} train acc "
                f"{figures['train_accuracy']:.4f} holdout acc {score:.4f} "
                f"({figures['seconds']:.0f} s){' *' if stale == 0 else ''}"
            )
        if on_epoch is not None:
            on_epoch(epoch, figures)
    result.seconds = time.monotonic() - started
    return result


def _restore(
    prior: resume.Saved,
    steps_per_epoch: int,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    generator: torch.Generator,
    result: TrainResult,
) -> tuple[int, int, float]:
    """Put the state of ``last.pt`` back; returns the next epoch, the early-stopping count
    and the seconds trained so far."""
    raw = prior.raw
    if raw["steps_per_epoch"] != steps_per_epoch:
        raise resume.ResumeError(
            f"{prior.path} was written with {raw['steps_per_epoch']} batches an epoch, the "
            f"data now gives {steps_per_epoch}: other data; use a new run folder or --fresh"
        )
    net.load_state_dict(raw["state_dict"])
    opt.load_state_dict(raw["optimizer"])
    sched.load_state_dict(raw["scheduler"])
    resume.set_rng_state(raw["rng"], generator)
    result.history = list(raw["history"])
    result.best_epoch, result.best = int(raw["best_epoch"]), dict(raw["best"])
    return prior.epoch + 1, int(raw["stale"]), float(raw["seconds"])
