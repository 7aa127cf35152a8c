"""The VAD interface: one shared detector, one small stateful stream per audio track.

Its settings are the ``vad*`` fields of ``VoiceModelConfig`` (``EMOSTREAM_VOICE__VAD``…).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class VadStream(Protocol):
    """One audio track's detector state (Silero keeps a recurrent state between frames)."""

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(k, frame_samples) float32 at 16 kHz, in order -> (k,) speech probabilities."""


class Vad(Protocol):
    """Shared by every track of a process: ``stream()`` gives each track its own state."""

    @property
    def name(self) -> str:
        """What runs, for logs and benchmarks (``silero voice-activity/1``, ``webrtc mode 3``)."""

    @property
    def frame_samples(self) -> int:
        """Samples per VAD frame at 16 kHz."""

    @property
    def threshold(self) -> float: ...

    def stream(self) -> VadStream: ...

    def run(self, work: Sequence[tuple[VadStream, np.ndarray]]) -> list[np.ndarray]:
        """Several of its streams at once, each with its frames, -> each one's
        probabilities: what one stream's call would give, run together where the
        detector gains by it (Silero batches across tracks)."""


def as_frames(samples: np.ndarray, frame_samples: int) -> np.ndarray:
    """A 1-D buffer of whole frames as (k, frame_samples) float32 (a view when it can be)."""
    x = np.asarray(samples, np.float32).reshape(-1)
    if x.size % frame_samples:
        raise ValueError(f"{x.size} samples are not whole frames of {frame_samples}")
    return x.reshape(-1, frame_samples)
