"""``bench face``'s offline rows: ``emostream analyze`` with its defaults on a video.

Two runs, with the settings ``emostream analyze`` uses (``analyze_settings``: its detector,
the tracking schedule, frames scored in chunks):

- *decoded frames*: the same frames fer is given, already decoded, through
  ``analyze_frames``: the like-for-like comparison with ``FER().detect_emotions``;
- *a file with a voice*: the shared video's frames muxed with RAVDESS speech
  (``talking_clip``) and run through ``analyze_paths`` as the CLI does (decoding, the
  frames, then the voice windows), so the figure is what a user waits for per frame.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emostream.bench.measure import progress
from emostream.bench.talking_clip import talking_clip

if TYPE_CHECKING:
    from emostream.settings import Settings


@dataclass(frozen=True)
class AnalyzeRun:
    """One timed ``analyze`` run: frames, frames with a face, wall seconds."""

    name: str
    frames: int
    with_face: int
    seconds: float
    voice_windows: int = 0
    detector: str = ""

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.seconds / max(self.frames, 1)


def _settings() -> Settings:
    from emostream.analyze_range import analyze_settings
    from emostream.cli.common import load_settings

    return analyze_settings(load_settings())


def speech() -> np.ndarray:
    """The benches' RAVDESS speech loop (16 kHz mono float32)."""
    from emostream.bench.stream_audio import the_loop
    from emostream.stream.audio import read_audio

    return read_audio(the_loop())


def analyze_decoded(frames: Sequence[np.ndarray], name: str) -> AnalyzeRun:
    """``analyze_frames`` over decoded frames with analyze's settings (one warm-up pass
    over the first 16 frames, not timed)."""
    from emostream.analyze import AnalyzeOptions, analyze_frames
    from emostream.models.face import FaceAnalyzer
    from emostream.stream.media import VideoFrame

    settings = _settings()
    analyzer = FaceAnalyzer.from_settings(settings)
    opts = AnalyzeOptions(progress=False)
    video = [VideoFrame(i, i / 30.0, f) for i, f in enumerate(frames)]
    list(analyze_frames(analyzer, video[:16], "warm-up", "warm-up", opts))
    t0 = time.perf_counter()
    found = sum(
        1
        for m in analyze_frames(analyzer, progress(video, name), "bench", "bench", opts)
        if m.faces
    )
    seconds = time.perf_counter() - t0
    ref = analyzer.detector.current.ref
    return AnalyzeRun(name, len(frames), found, seconds, detector=ref)


def analyze_with_voice(
    video: Path, speech: np.ndarray, name: str, frames: int | None = None
) -> AnalyzeRun | str:
    """The whole CLI path on ``video``'s first ``frames`` frames muxed with ``speech`` (a
    temporary file of the shared data, deleted after): decode, frames, voice windows; or
    why it cannot run (no voice model)."""
    from emostream.analyze import AnalyzeOptions, Message, analyze_paths
    from emostream.models.face import FaceAnalyzer
    from emostream.models.voice import VoiceService
    from emostream.schema import FaceMessage, VoiceMessage

    settings = _settings()
    analyzer = FaceAnalyzer.from_settings(settings)
    voice = VoiceService.load(settings)
    if voice.analyzer is None or voice.vad is None:
        return f"voice unavailable: {voice.unavailable}"
    messages: list[Message] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp:
        clip = talking_clip(Path(tmp) / "talking.mp4", video, speech, frames)
        opts = AnalyzeOptions(progress=False)
        t0 = time.perf_counter()
        analyze_paths(
            analyzer, [clip], opts, messages.append, lambda p, w: problems.append(w), voice
        )
        seconds = time.perf_counter() - t0
    if problems:
        raise SystemExit(f"bench face: analyze failed on the talking clip: {problems}")
    faces = [m for m in messages if isinstance(m, FaceMessage)]
    windows = sum(1 for m in messages if isinstance(m, VoiceMessage))
    return AnalyzeRun(
        name,
        len(faces),
        sum(1 for m in faces if m.faces),
        seconds,
        windows,
        analyzer.detector.current.ref,
    )
