"""Issue 23: ``--annotate``'s labels stay inside the image and off each other, in a crowd.

Pure geometry on synthetic boxes (``label_layout``), and the drawing on a synthetic frame.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from emostream.annotate import draw_faces, label_size
from emostream.label_layout import Rect, font_scale, overlaps, place_label, place_labels
from emostream.schema import Face


def _crowd(n: int, width: int, height: int, seed: int) -> list[Rect]:
    """``n`` faces of 30-70 px packed in rows, some at the image's very edges."""
    rng = np.random.default_rng(seed)
    boxes: list[Rect] = [(0, 0, 40, 40), (width - 45, height - 45, 45, 45)]  # corners
    while len(boxes) < n:
        s = int(rng.integers(30, 70))
        boxes.append((int(rng.integers(0, width - s)), int(rng.integers(0, height - s)), s, s))
    return boxes


def _check(labels: list[Rect], width: int, height: int) -> None:
    for x, y, w, h in labels:
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, (x, y, w, h)
    for a, b in itertools.combinations(labels, 2):
        assert not overlaps(a, b), (a, b)


@pytest.mark.parametrize("seed", range(5))
def test_a_crowd_of_30_gets_labels_inside_and_apart(seed: int) -> None:
    width, height = 1280, 886
    boxes = _crowd(30, width, height, seed)
    scale = font_scale(width, height)
    sizes = [label_size(f"#{i} surprise 0.97", scale, 1) for i in range(30)]
    labels = place_labels(boxes, sizes, width, height)
    assert len(labels) == 30
    assert [r[2:] for r in labels] == sizes  # moved, never resized
    _check(labels, width, height)


def test_a_lone_face_is_labelled_above_else_below_else_inside() -> None:
    assert place_label((100, 100, 50, 50), (80, 20), 640, 480, []) == (100, 80, 80, 20)
    assert place_label((100, 5, 50, 50), (80, 20), 640, 480, []) == (100, 55, 80, 20)
    assert place_label((100, 0, 50, 480), (80, 20), 640, 480, []) == (100, 0, 80, 20)
    assert place_label((600, 100, 40, 40), (80, 20), 640, 480, []) == (560, 80, 80, 20)


def test_a_taken_spot_moves_the_next_label() -> None:
    first = place_label((100, 100, 50, 50), (80, 20), 640, 480, [])
    second = place_label((110, 100, 50, 50), (80, 20), 640, 480, [first])
    assert not overlaps(first, second)


def test_font_scale_follows_the_image() -> None:
    assert font_scale(320, 240) < font_scale(1280, 886) < font_scale(3840, 2160)
    assert font_scale(100, 100) >= 0.35 and font_scale(10_000, 10_000) <= 1.2


def test_drawn_crowd_keeps_every_label_inside() -> None:
    width, height = 640, 480
    boxes = _crowd(30, width, height, 7)
    faces = [
        Face(track_id=i, box=b, scores={"happy": 0.9, "sad": 0.1}, label="happy", confidence=0.9)
        for i, b in enumerate(boxes)
    ]
    frame = np.zeros((height, width, 3), np.uint8)
    out = draw_faces(frame, faces)
    assert out.shape == frame.shape and out.any() and not frame.any()
