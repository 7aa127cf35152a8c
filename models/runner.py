"""ONNX Runtime sessions: provider choice, thread counts, and batched classification.

``OnnxRunner`` knows nothing about emotions; ``Classifier`` adds the card (preprocessing,
class names, softmax when the graph outputs logits): face crops for an image card, audio
windows (log-mel features in numpy, ``models/logmel.py``) for an audio card. GPU when
present: providers default to CUDA then CPU, in the order ONNX Runtime reports them available.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import onnxruntime as ort
except ImportError as exc:  # the runtime comes from an extra, so say which to install
    raise ImportError(
        "ONNX Runtime is not installed: pip install 'emostream[cpu]' (or 'emostream[gpu]' "
        "for CUDA; never both)"
    ) from exc
from pydantic import BaseModel, Field

from emostream.fields import OptionalCommaList
from emostream.models.card import AudioInput, ImageInput, ModelCard
from emostream.models.logmel import log_mel
from emostream.models.preprocess import prepare
from emostream.models.repository import PRODUCTION, ModelRepository

log = logging.getLogger(__name__)

#: Preference order when the user leaves providers on "auto".
PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class RunnerConfig(BaseModel):
    providers: OptionalCommaList = Field(
        default=None, description="ONNX Runtime providers in order; None picks CUDA then CPU"
    )
    intra_op_threads: int = Field(default=0, ge=0, description="0 lets ONNX Runtime decide")
    inter_op_threads: int = Field(default=0, ge=0)
    allow_tensorrt: bool = False  # TensorRT builds engines at start-up: opt in
    cpu_mem_arena: bool = Field(
        default=True,
        description="keep ONNX Runtime's CPU memory arena, which holds the largest input's "
        "working memory for good; off for inputs whose size varies widely (far detectors)",
    )
    allow_spinning: bool = Field(
        default=False,
        description="let idle ONNX Runtime threads spin; off because spinning steals the "
        "cores that decode and detection need between model calls (docs/BENCHMARKS.md)",
    )


def choose_providers(config: RunnerConfig) -> list[str]:
    available = ort.get_available_providers()
    if config.providers:
        missing = [p for p in config.providers if p not in available]
        if missing:
            raise ValueError(f"providers {missing} not available; this build has {available}")
        return list(config.providers)
    preferred = [p for p in PREFERRED if p in available]
    if not config.allow_tensorrt:
        preferred = [p for p in preferred if p != "TensorrtExecutionProvider"]
    return preferred or ["CPUExecutionProvider"]


class OnnxRunner:
    def __init__(self, model: Path | bytes, config: RunnerConfig | None = None) -> None:
        config = config or RunnerConfig()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_cpu_mem_arena = config.cpu_mem_arena
        if config.intra_op_threads:
            opts.intra_op_num_threads = config.intra_op_threads
        if config.inter_op_threads:
            opts.inter_op_num_threads = config.inter_op_threads
        spin = "1" if config.allow_spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        src = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(src, opts, providers=choose_providers(config))
        self.providers: list[str] = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        log.info("onnx session on %s", self.providers[0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return np.asarray(out)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass
class Classifier:
    """A card plus its runner: crops in, per-class probabilities out."""

    card: ModelCard
    runner: OnnxRunner

    @classmethod
    def from_repository(
        cls,
        repo: ModelRepository,
        name: str,
        alias: str = PRODUCTION,
        config: RunnerConfig | None = None,
    ) -> Classifier:
        version = repo.resolve(name, alias)
        card = repo.card(name, version)
        return cls(card, OnnxRunner(repo.onnx_path(name, version), config))

    @property
    def spec(self) -> ImageInput:
        if not isinstance(self.card.input, ImageInput):
            raise TypeError(f"{self.card.ref} takes {self.card.input.kind} input, not images")
        return self.card.input

    @property
    def audio(self) -> AudioInput:
        if not isinstance(self.card.input, AudioInput):
            raise TypeError(f"{self.card.ref} takes {self.card.input.kind} input, not audio")
        return self.card.input

    def features(self, waves: np.ndarray) -> np.ndarray:
        """(N, window samples) float32 windows -> the (N, 1, mels, frames) model input."""
        return log_mel(waves, self.audio.features)[:, None]

    def predict_windows(self, waves: np.ndarray) -> np.ndarray:
        """(N, classes) probabilities for N audio windows, one batched ONNX Runtime call."""
        if not len(waves):
            return np.zeros((0, len(self.card.classes)), dtype=np.float32)
        return self.predict_tensor(self.features(waves))

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, classes) probabilities for N crops, one batched ONNX Runtime call."""
        if not crops:
            return np.zeros((0, len(self.card.classes)), dtype=np.float32)
        out = self.runner.run(prepare(crops, self.spec))
        return softmax(out) if self.card.output.kind == "logits" else out

    def predict_tensor(self, batch: np.ndarray) -> np.ndarray:
        out = self.runner.run(batch)
        return softmax(out) if self.card.output.kind == "logits" else out
