"""The real media files of the shared data, for tests that stream them (skip when absent)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from emostream.paths import data_root


def media_file(name: str) -> Path:
    """``<data>/media/<name>``, or skip the test saying what is missing."""
    root = data_root()
    if root is None or not (root / "media" / name).is_file():
        pytest.skip(f"shared data not found: set EMOSTREAM_DATA (needs media/{name})")
    return root / "media" / name


#: A RAVDESS clip with clear speech (actor 1, angry, strong intensity): 16 kHz mono FLAC.
RAVDESS_CLIP = "Actor_01/03-01-05-02-01-01-01.flac"


def ravdess_file(name: str = RAVDESS_CLIP) -> Path:
    """``<data>/ravdess/<name>``, or skip the test saying what is missing."""
    root = data_root()
    if root is None or not (root / "ravdess" / name).is_file():
        pytest.skip(f"shared data not found: set EMOSTREAM_DATA (needs ravdess/{name})")
    return root / "ravdess" / name


def talking_video(path: Path, media: Path, speech: np.ndarray) -> Path:
    """30 frames of ``media``/woman2.mp4 with the first two seconds of ``speech`` (16 kHz
    float32) as AAC, in an mp4 at ``path``: a video with faces and a voice."""
    with av.open(str(media / "woman2.mp4")) as src, av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=15)
        s = src.streams.video[0]
        v.width, v.height, v.pix_fmt = s.width, s.height, "yuv420p"  # type: ignore[union-attr]
        a = out.add_stream("aac", rate=48000)
        for i, frame in enumerate(src.decode(s)):
            if i >= 30:
                break
            img = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            img.pts = i
            for p in v.encode(img):  # type: ignore[union-attr]
                out.mux(p)
        for p in v.encode(None):  # type: ignore[union-attr]
            out.mux(p)
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        sound = av.AudioFrame.from_ndarray(speech[None, : 32000], format="flt", layout="mono")
        sound.sample_rate, sound.pts, sound.time_base = 16000, 0, Fraction(1, 16000)
        for f in [*resampler.resample(sound), *resampler.resample(None)]:
            for p in a.encode(f):  # type: ignore[union-attr]
                out.mux(p)
        for p in a.encode(None):  # type: ignore[union-attr]
            out.mux(p)
    return path
