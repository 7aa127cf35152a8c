"""The real media files of the shared data, for tests that stream them (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.bench.talking_clip import talking_clip
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
    return talking_clip(path, media / "woman2.mp4", speech[:32000], frames=30, fps=15)


def media_image(name: str) -> np.ndarray:
    """``<data>/media/<name>`` decoded (BGR), or skip the test saying what is missing."""
    import cv2

    image = cv2.imread(str(media_file(name)))
    assert image is not None, name
    return image
