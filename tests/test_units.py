"""Preprocessing, cropping and the IoU tracker: small pure functions."""

from __future__ import annotations

import numpy as np

from emostream.models.card import ImageInput
from emostream.models.face_tracking.ids import IouTracker, iou
from emostream.models.preprocess import crop, prepare

SPEC = ImageInput(
    name="input", layout="NCHW", height=64, width=64, color="gray", scale=2 / 255, offset=-1.0
)


def test_prepare_scales_to_card_range_and_layout() -> None:
    black = np.zeros((48, 48), np.uint8)
    white = np.full((100, 80, 3), 255, np.uint8)
    batch = prepare([black, white], SPEC)
    assert batch.shape == (2, 1, 64, 64) and batch.dtype == np.float32
    assert np.allclose(batch[0], -1.0) and np.allclose(batch[1], 1.0)
    nhwc = prepare([white], SPEC.model_copy(update={"layout": "NHWC", "color": "rgb"}))
    assert nhwc.shape == (1, 64, 64, 3)


def test_crop_margin_is_clipped_to_the_image() -> None:
    img = np.arange(100 * 100).reshape(100, 100)
    assert crop(img, (10, 10, 20, 20), 0.5).shape == (40, 40)
    assert crop(img, (0, 0, 20, 20), 0.5).shape == (30, 30)
    assert crop(img, (90, 90, 20, 20), 0.0).shape == (10, 10)


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_tracker_keeps_ids_for_moving_faces_and_gives_new_ids_to_new_faces() -> None:
    t = IouTracker()
    a, b = (10, 10, 50, 50), (200, 10, 50, 50)
    ids, _ = t.update([a, b])
    assert ids == [1, 2]
    ids, _ = t.update([(214, 12, 50, 50), (14, 12, 50, 50)])  # both moved, order swapped
    assert ids == [2, 1]
    ids, _ = t.update([(400, 300, 40, 40)])
    assert ids == [3]


def test_tracker_forgets_after_max_missed() -> None:
    t = IouTracker(max_missed=2)
    t.update([(0, 0, 10, 10)])
    for _ in range(3):
        t.update([])
    ids, _ = t.update([(0, 0, 10, 10)])
    assert ids == [2]


def test_tracker_smoothing_is_an_ema() -> None:
    t = IouTracker(alpha=0.5)
    box = (0, 0, 10, 10)
    t.update([box], np.array([[1.0, 0.0]]))
    _, s = t.update([box], np.array([[0.0, 1.0]]))
    assert s is not None and np.allclose(s, [[0.5, 0.5]])
    _, raw = IouTracker().update([box], np.array([[0.2, 0.8]]))
    assert raw is not None and np.allclose(raw, [[0.2, 0.8]])


def test_a_face_crop_is_the_square_on_the_box_centre() -> None:
    """The emotion model sees a square (the mean of the box's sides) on the box's centre,
    grown by the margin: a tall YuNet box is not squashed into the model's square input."""
    from emostream.models.preprocess import face_crop, square

    assert square((10, 20, 40, 60)) == (5, 25, 50, 50)
    assert square((0, 0, 30, 30)) == (0, 0, 30, 30)
    image = np.zeros((200, 200), np.uint8)
    assert face_crop(image, (50, 40, 40, 60), 0.1).shape == (60, 60)
