"""A received video frame as the BGR image the broker carries: downscaled, off the loop.

One libswscale call scales and converts (``VideoFrame.to_ndarray(width, height, "bgr24",
interpolation=AREA)``) instead of a full-size BGR image then ``cv2.resize``: no full-size
intermediate, and swscale's area filter is within about 1 grey level (mean absolute
difference) of ``INTER_AREA``. Both cost about the same CPU (0.3 ms for 1280x720 to
640x360, docs/BENCHMARKS.md); what matters at 16 streams is *where* it runs. ``convert``
runs it on a small shared thread pool so the event loop, which also carries every peer's
RTP, DTLS and data channel, is not held for it; swscale and the copy out are C, and most
of it runs without the GIL.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from av import VideoFrame
from av.video.reformatter import Interpolation

#: swscale's area average, the counterpart of ``cv2.INTER_AREA`` for downscaling.
INTERPOLATION = Interpolation.AREA


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """``(width, height, scale)`` with the longer side at most ``max_side`` (never upscaled)."""
    scale = min(1.0, max_side / max(width, height))
    if scale >= 1.0:
        return width, height, 1.0
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def to_bgr(frame: VideoFrame, max_side: int) -> tuple[np.ndarray, float]:
    """The frame as a BGR image, longer side at most ``max_side``, and the scale applied."""
    w, h, scale = scaled_size(frame.width, frame.height, max_side)
    image = frame.to_ndarray(width=w, height=h, format="bgr24", interpolation=INTERPOLATION)
    return image, scale


def converter(threads: int) -> ThreadPoolExecutor:
    """The pool frames are converted on (threads named ``frame-convert``)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="frame-convert")


async def convert(
    pool: ThreadPoolExecutor, frame: VideoFrame, max_side: int
) -> tuple[np.ndarray, float]:
    """``to_bgr`` on ``pool``, awaited from the event loop."""
    return await asyncio.get_running_loop().run_in_executor(pool, to_bgr, frame, max_side)
