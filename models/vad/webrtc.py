"""The WebRTC VAD (``webrtcvad-wheels``): Google's GMM detector from libwebrtc, in C.

No model file and very cheap, but a 0/1 decision per 30 ms frame tuned for telephony
noise, not a probability; docs/BENCHMARKS.md measures it against Silero on RAVDESS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from emostream.models.vad.base import VadStream, as_frames

if TYPE_CHECKING:
    from emostream.models.voice import VoiceModelConfig

SAMPLE_RATE = 16000
FRAME_MS = 30  # webrtcvad takes 10, 20 or 30 ms frames


class _WebRtcStream:
    def __init__(self, mode: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(mode)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
        return np.array(
            [1.0 if self._vad.is_speech(row.tobytes(), SAMPLE_RATE) else 0.0 for row in pcm],
            np.float32,
        )


class WebRtcVad:
    def __init__(self, mode: int, threshold: float) -> None:
        try:
            import webrtcvad  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "the WebRTC VAD needs webrtcvad-wheels: pip install 'emostream[cpu]'"
            ) from exc
        self.mode = mode
        self.threshold = threshold
        self.frame_samples = SAMPLE_RATE * FRAME_MS // 1000
        self.name = f"webrtc mode {self.mode}"

    @classmethod
    def from_config(cls, config: VoiceModelConfig) -> WebRtcVad:
        return cls(config.webrtc_mode, config.vad_threshold)

    def stream(self) -> _WebRtcStream:
        return _WebRtcStream(self.mode)

    def run(self, work: Sequence[tuple[VadStream, np.ndarray]]) -> list[np.ndarray]:
        """One stream after another: a C call per frame has nothing to gain from batches."""
        return [stream(frames) for stream, frames in work]

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Whole-buffer helper (benchmarks): one fresh stream over every full frame."""
        n = len(samples) // self.frame_samples * self.frame_samples
        return self.stream()(as_frames(samples[:n], self.frame_samples))
