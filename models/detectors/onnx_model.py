"""Where a single-model detector's ONNX file comes from, and the session it runs in.

YuNet and RetinaFace each run one ONNX model: the repository's ``model``/``version`` (the
usual case; the ``ref`` names the version and the range, as ``/readyz`` and the logs show
it) or an explicit file (tests, a model being tried out). One place for that, so the two
backends load alike, and group frames into batched calls alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from emostream.models.repository import ModelRepository
from emostream.models.runner import OnnxRunner, RunnerConfig


class SingleModelConfig(Protocol):
    """The fields a single-model backend's config has (``RangeScaled`` gives the label)."""

    model: str
    version: str
    model_root: Path | None
    providers: list[str] | None
    intra_op_threads: int

    @property
    def range_label(self) -> str: ...


def by_shape(inputs: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of ``inputs`` per shape: the frames one batched model call can take."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(x.shape, []).append(i)
    return groups


def load(config: SingleModelConfig, model: Path | None, backend: str) -> tuple[OnnxRunner, str]:
    """The session of ``model`` (or of the repository's version), and its ``ref``."""
    if model is None:
        from emostream.paths import model_root

        repo = ModelRepository(config.model_root or model_root())
        version = repo.resolve(config.model, config.version)
        model = repo.onnx_path(config.model, version)
        ref = f"{config.model}/{version} ({config.range_label})"
    else:
        ref = f"{backend} ({model.name})"
    # At far a photo's working size goes up to far_pixels (a 40 MP photo: 750 MB of
    # activations); an arena would keep that much per detector and thread for good.
    runner = RunnerConfig(
        providers=config.providers,
        intra_op_threads=config.intra_op_threads,
        cpu_mem_arena=getattr(config, "range", None) != "far",
    )
    return OnnxRunner(model, runner), ref
