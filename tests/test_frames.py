"""Frame conversion (``stream.frames``) on real decoded video, against the old two-step one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import islice

import av
import cv2
import numpy as np
import pytest
from av import VideoFrame
from shared_media import media_file

from emostream.stream.frames import convert, converter, scaled_size, to_bgr


@pytest.fixture(scope="module")
def frames() -> list[VideoFrame]:
    """Ten decoded frames (yuv420p, 596x336) from the shared clip."""
    with av.open(str(media_file("woman2.mp4"))) as container:
        decoded: Iterator[VideoFrame] = container.decode(video=0)
        return list(islice(decoded, 0, 60, 6))


def _old(frame: VideoFrame, max_side: int) -> np.ndarray:
    """What sessions did before: full-size BGR, then ``cv2.resize`` with ``INTER_AREA``."""
    image: np.ndarray = frame.to_ndarray(format="bgr24")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


@pytest.mark.data
@pytest.mark.parametrize("max_side", [320, 200])
def test_downscaled_in_one_call_matches_convert_then_resize(
    frames: list[VideoFrame], max_side: int
) -> None:
    for frame in frames:
        image, scale = to_bgr(frame, max_side)
        old = _old(frame, max_side)
        assert image.shape == old.shape and image.dtype == np.uint8
        assert max(image.shape[:2]) == max_side
        assert scale == pytest.approx(max_side / max(frame.width, frame.height))
        diff = np.abs(image.astype(np.int16) - old.astype(np.int16))
        assert diff.mean() < 2.0, diff.mean()  # measured about 1.1 grey levels


@pytest.mark.data
def test_a_frame_within_max_side_is_only_converted(frames: list[VideoFrame]) -> None:
    image, scale = to_bgr(frames[0], 640)
    assert scale == 1.0
    assert np.array_equal(image, frames[0].to_ndarray(format="bgr24"))


def test_sizes_round_and_never_upscale() -> None:
    assert scaled_size(1280, 720, 640) == (640, 360, 0.5)
    assert scaled_size(480, 640, 320) == (240, 320, 0.5)
    assert scaled_size(640, 480, 640) == (640, 480, 1.0)


@pytest.mark.data
async def test_convert_runs_on_the_frame_convert_threads(frames: list[VideoFrame]) -> None:
    pool = converter(2)
    try:
        name = pool.submit(lambda: threading.current_thread().name).result()
        assert name.startswith("frame-convert")
        image, scale = await convert(pool, frames[0], 320)
        expected, expected_scale = to_bgr(frames[0], 320)
        assert np.array_equal(image, expected) and scale == expected_scale
    finally:
        pool.shutdown()
