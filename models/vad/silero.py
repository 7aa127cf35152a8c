"""Silero VAD on ONNX Runtime: a small recurrent net, one speech probability per 32 ms.

The graph takes 512 new samples at 16 kHz with the previous 64 as context, plus a
recurrent state (2, 1, 128) that it returns updated; each track keeps its own context and
state (``SileroStream``) while one ``InferenceSession`` serves every track (ONNX Runtime's
``run`` is thread-safe). One intra-op thread, as Silero's own wrapper uses: the net is far
too small to gain from more, and the cores belong to decode and the emotion models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from emostream.models.repository import ModelRepository
from emostream.models.vad.base import VadStream

if TYPE_CHECKING:
    from emostream.models.voice import VoiceModelConfig

SAMPLE_RATE = 16000
FRAME = 512
CONTEXT = 64
_SR = np.array(SAMPLE_RATE, np.int64)


class SileroStream:
    """One track's recurrent state and context (its last ``CONTEXT`` samples)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros((1, CONTEXT), np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return run_streams(self._session, [(self, frames)])[0]


def run_streams(
    session: ort.InferenceSession, work: Sequence[tuple[SileroStream, np.ndarray]]
) -> list[np.ndarray]:
    """Each stream's frames, (k, FRAME) in order, -> its (k,) speech probabilities.

    Many tracks at once: step k runs the k-th frame of every stream that has one as one
    batch (the graph takes (batch, samples) and a (2, batch, 128) state), which costs a
    third of what one run per track costs at 16 tracks or more (docs/BENCHMARKS.md, "Calls").
    """
    out = [np.empty(len(frames), np.float32) for _, frames in work]
    for k in range(max((len(frames) for _, frames in work), default=0)):
        active = [i for i, (_, frames) in enumerate(work) if len(frames) > k]
        x = np.empty((len(active), CONTEXT + FRAME), np.float32)
        for row, i in enumerate(active):
            stream, frames = work[i]
            x[row, :CONTEXT] = stream.context[0]
            x[row, CONTEXT:] = frames[k]
        state = np.concatenate([work[i][0].state for i in active], axis=1)
        prob, state = session.run(None, {"input": x, "state": state, "sr": _SR})
        for row, i in enumerate(active):
            stream = work[i][0]
            stream.state = state[:, row : row + 1]
            stream.context = x[row : row + 1, -CONTEXT:]
            out[i][k] = prob[row, 0]
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

    def run(self, work: Sequence[tuple[VadStream, np.ndarray]]) -> list[np.ndarray]:
        """Many tracks' frames as batches (``run_streams``); streams must be this VAD's."""
        mine = [(s, f) for s, f in work if isinstance(s, SileroStream)]
        if len(mine) != len(work):
            raise TypeError("a stream that is not a SileroStream")
        return run_streams(self._session, mine)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Whole-buffer helper (benchmarks): one fresh stream over every full frame."""
        n = len(samples) // FRAME * FRAME
        return self.stream()(np.asarray(samples[:n], np.float32).reshape(-1, FRAME))
