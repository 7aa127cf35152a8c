"""``last.pt``: what a fit needs to go on after its last finished epoch, as if never stopped.

After every epoch the loop writes ``last.pt`` beside the best checkpoint (a temporary file,
then a rename, so a stop mid-write leaves the previous one): the network, the optimiser, the
learning-rate schedule, the batch generator and the global Python, NumPy and torch (and
CUDA) random states, the history, the best figures and epoch, the early-stopping count, the
configuration and the caller's ``meta`` (the MLflow run id). A loop that starts in a folder
holding ``last.pt`` written with the same configuration restores all of it and goes on with
the next epoch, and gives the same checkpoints as a run that was never stopped
(``tests/test_resume.py``). A different configuration is a :class:`ResumeError`: the epochs
done so far would not be the run the configuration describes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from emostream.training.train_config import ConfigError, RunConfig, flatten

LAST = "last.pt"


class ResumeError(ConfigError):
    """``last.pt`` belongs to a run with another configuration (or other data)."""


@dataclass(frozen=True)
class Saved:
    """A ``last.pt`` read back (tensors mapped lazily: reading the header is cheap)."""

    path: Path
    raw: dict[str, Any]

    @property
    def epoch(self) -> int:
        """The last finished epoch."""
        return int(self.raw["epoch"])

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.raw.get("meta", {})
        return meta


def last_path(run_dir: Path) -> Path:
    return run_dir / LAST


def forget(run_dir: Path) -> bool:
    """Delete ``last.pt`` (``--fresh``; the fit stage when it has finished): True if it was
    there."""
    path = last_path(run_dir)
    existed = path.is_file()
    path.unlink(missing_ok=True)
    return existed


def peek(run_dir: Path, cfg: RunConfig) -> Saved | None:
    """``run_dir``'s ``last.pt``, or None; a :class:`ResumeError` naming what differs when
    it was written with another configuration."""
    path = last_path(run_dir)
    if not path.is_file():
        return None
    try:
        raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a file torch cannot read back is no state to go on from
        raise ResumeError(f"{path}: cannot be read ({exc}); delete it or pass --fresh") from None
    mine, theirs = cfg.flat(), flatten(raw.get("config", {}))
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in differ)
        raise ResumeError(
            f"{path} holds a stopped run with another configuration ({shown}); resume it with "
            "the same settings, or use a new run folder, or --fresh to start over (deletes "
            "last.pt)"
        )
    return Saved(path, raw)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a fit draws from, as tensors and numbers (``weights_only`` loads)."""
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, key, pos, has_gauss, gauss = legacy
    state: dict[str, Any] = {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename it over ``path`` (atomic)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
