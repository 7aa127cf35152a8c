"""Audio in: any decoded frame or file becomes 16 kHz mono float32, the voice model's input.

WebRTC brings Opus at 48 kHz (stereo or mono) and G.711 at 8 kHz; files come as wav, flac,
mp3 or ogg at any rate. All of it goes through one FFmpeg resampler (PyAV), so a live call
and ``emostream analyze`` of the same recording feed the model the same samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from emostream.stream.media import MediaError

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm"}


class Resampler:
    """Frames of any rate, layout and sample format in; float32 mono samples out."""

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._inner = AudioResampler(format="flt", layout="mono", rate=rate)

    def __call__(self, frame: AudioFrame | None) -> np.ndarray:
        """The samples ``frame`` yields (None flushes what the resampler holds)."""
        out = [f.to_ndarray().reshape(-1) for f in self._inner.resample(frame)]
        if not out:
            return np.zeros(0, np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


def resample(frames: Iterable[AudioFrame], rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Each frame's samples at ``rate``, then what the resampler held back."""
    r = Resampler(rate)
    for frame in frames:
        yield r(frame)
    yield r(None)


def media_streams(path: Path) -> set[str]:
    """The kinds of stream FFmpeg finds in ``path`` (``audio``, ``video``); none for a file
    it cannot open. The one probe for "is this audio only" and "has this video sound"."""
    try:
        with av.open(str(path)) as container:
            kinds = {"audio"} if container.streams.audio else set()
            return kinds | ({"video"} if container.streams.video else set())
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        return set()


def read_audio(path: Path, rate: int = SAMPLE_RATE, max_seconds: float = 3600.0) -> np.ndarray:
    """The first audio stream of a file (audio or video) as float32 mono at ``rate``.

    Raises ``MediaError`` with the reason for a file with no audio, one FFmpeg cannot
    decode, or one longer than ``max_seconds``.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("no_audio", f"{path}: the file has no audio stream")
            stream = container.streams.audio[0]
            chunks: list[np.ndarray] = []
            total, limit = 0, int(max_seconds * rate)
            for samples in resample(container.decode(stream), rate):
                chunks.append(samples)
                total += len(samples)
                if total > limit:
                    raise MediaError("too_long", f"{path}: longer than the {max_seconds:g} s limit")
    except av.FFmpegError as exc:
        raise MediaError("undecodable", f"{path}: cannot decode audio ({exc})") from None
    if not chunks or total == 0:
        raise MediaError("no_audio", f"{path}: the audio stream holds no samples")
    return np.concatenate(chunks)
