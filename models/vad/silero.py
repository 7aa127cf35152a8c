"""Silero VAD on ONNX Runtime: a small recurrent net, one speech probability per 32 ms.

The graph takes 512 new samples at 16 kHz with the previous 64 as context, plus a
recurrent state (2, 1, 128) that it returns updated; each track keeps its own context and
state (``SileroStream``) while one ``InferenceSession`` serves every track (ONNX Runtime's
``run`` is thread-safe). One intra-op thread, as Silero's own wrapper uses: the net is far
too small to gain from more, and the cores belong to decode and the emotion models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from emostream.models.repository import ModelRepository

if TYPE_CHECKING:
    from emostream.models.voice import VoiceModelConfig

SAMPLE_RATE = 16000
FRAME = 512
CONTEXT = 64


class SileroStream:
    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)
        self._sr = np.array(SAMPLE_RATE, np.int64)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.empty(len(frames), np.float32)
        for i, frame in enumerate(np.asarray(frames, np.float32)):
            x = np.concatenate([self._context, frame[None, :]], axis=1)
            prob, self._state = self._session.run(
                None, {"input": x, "state": self._state, "sr": self._sr}
            )
            self._context = x[:, -CONTEXT:]
            out[i] = float(prob.reshape(-1)[0])
        return out


class SileroVad:
    frame_samples = FRAME

    def __init__(self, model: Path | bytes, threshold: float, ref: str = "") -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        src = str(model) if isinstance(model, Path) else model
        self._session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        self.threshold = threshold
        self.name = f"silero {ref}".strip()

    @classmethod
    def from_repository(cls, config: VoiceModelConfig, model_root: Path) -> SileroVad:
        """The version ``config`` names (``ModelMissingError`` with the pull command if none)."""
        repo = ModelRepository(model_root)
        name = config.vad_model
        version = repo.resolve(name, config.vad_version)
        return cls(repo.onnx_path(name, version), config.vad_threshold, f"{name}/{version}")

    def stream(self) -> SileroStream:
        return SileroStream(self._session)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Whole-buffer helper (benchmarks): one fresh stream over every full frame."""
        n = len(samples) // FRAME * FRAME
        return self.stream()(np.asarray(samples[:n], np.float32).reshape(-1, FRAME))
