"""A video with a voice for the benches: frames of a shared video, speech under them.

The shared videos have no sound track, and ``bench face`` times ``analyze`` on a video
with audio as well as without; this muxes a video's frames (MPEG-4 part 2, the encoder
every FFmpeg build has) with 16 kHz mono speech as AAC. The tests' talking video is the
same thing, shorter.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def talking_clip(
    path: Path,
    video: Path,
    speech: np.ndarray,
    frames: int | None = None,
    fps: int | None = None,
) -> Path:
    """``frames`` frames of ``video`` (all when None) at ``fps`` (the source's when None)
    with ``speech`` (16 kHz float32 mono, cut to the frames' length) as AAC, written to
    the mp4 ``path``."""
    with av.open(str(video)) as src, av.open(str(path), "w") as out:
        s = src.streams.video[0]
        rate = Fraction(fps) if fps else (s.average_rate or Fraction(15))
        v = out.add_stream("mpeg4", rate=rate)
        v.width, v.height, v.pix_fmt = s.width, s.height, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        n = 0
        for frame in src.decode(s):
            if frames is not None and n >= frames:
                break
            img = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            img.pts = n
            for p in v.encode(img):
                out.mux(p)
            n += 1
        for p in v.encode(None):
            out.mux(p)
        samples = min(len(speech), int(16000 * n / float(rate)))
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        sound = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(speech[None, :samples], np.float32), format="flt", layout="mono"
        )
        sound.sample_rate, sound.pts, sound.time_base = 16000, 0, Fraction(1, 16000)
        for f in [*resampler.resample(sound), *resampler.resample(None)]:
            for p in a.encode(f):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    return path
