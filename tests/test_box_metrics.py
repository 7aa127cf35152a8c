"""The detector scoring rules (bench/box_metrics.py) on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emostream.bench import box_metrics as bm


def arr(*boxes: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(boxes, float).reshape(-1, 4)


def test_iou_of_identical_disjoint_and_half_overlapping_boxes() -> None:
    ious = bm.iou_matrix(arr((0, 0, 10, 10)), arr((0, 0, 10, 10), (20, 20, 5, 5), (5, 0, 10, 10)))
    assert ious[0, 0] == pytest.approx(1.0)
    assert ious[0, 1] == 0.0
    assert ious[0, 2] == pytest.approx(50 / 150)


def test_surest_detection_takes_the_face_and_a_duplicate_is_wrong() -> None:
    faces = arr((0, 0, 40, 40))
    boxes = arr((1, 1, 40, 40), (0, 0, 40, 40))
    m = bm.match(faces, arr(), boxes, np.array([0.6, 0.9]))
    # sorted by score: the 0.9 box first takes the face, the 0.6 one is a duplicate
    assert list(m.verdict) == [1, 0]
    assert list(m.scores) == [0.9, 0.6]


def test_a_box_inside_an_ignore_region_is_neither_right_nor_wrong() -> None:
    m = bm.match(arr(), arr((100, 100, 50, 50)), arr((110, 110, 8, 8), (0, 0, 8, 8)), np.ones(2))
    assert list(m.verdict) == [-1, 0]


def test_low_iou_is_a_miss_and_a_false_positive() -> None:
    m = bm.match(arr((0, 0, 20, 20)), arr(), arr((15, 15, 20, 20)), np.ones(1))
    s = bm.score_set([m], 0.5)
    assert s.recall == 0.0
    assert s.false_per_image == 1.0


def test_recall_by_size_and_threshold() -> None:
    faces = arr((0, 0, 20, 20), (100, 0, 50, 50), (300, 0, 200, 200))
    boxes = arr((0, 0, 20, 20), (100, 0, 50, 50), (300, 0, 200, 200), (600, 600, 30, 30))
    m = bm.match(faces, arr(), boxes, np.array([0.3, 0.8, 0.9, 0.7]))
    low = bm.score_set([m], 0.2)
    assert low.recall == 1.0
    assert low.faces_by_size == (1, 1, 1)
    assert low.false_per_image == 1.0
    high = bm.score_set([m], 0.75)
    assert high.recall_by_size[0] == 0.0 and high.recall_by_size[1:] == (1.0, 1.0)
    assert high.recall_goal == pytest.approx(2 / 3)  # the 20 px face counts, unfound
    assert high.false_per_image == 0.0
    assert high.precision == 1.0


def test_average_precision_of_a_perfect_and_a_mixed_ranking() -> None:
    faces = arr((0, 0, 20, 20), (100, 0, 20, 20))
    perfect = bm.match(faces, arr(), faces.copy(), np.array([0.9, 0.8]))
    assert bm.score_set([perfect], 0.0).ap == pytest.approx(1.0)
    # a false positive ranked between the two faces: AP = 0.5 * 1 + 0.5 * 2/3
    mixed = bm.match(
        faces,
        arr(),
        arr((0, 0, 20, 20), (50, 50, 9, 9), (100, 0, 20, 20)),
        np.array([0.9, 0.85, 0.8]),
    )
    assert bm.score_set([mixed], 0.0).ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_calibration_keeps_false_positives_within_the_budget() -> None:
    faces = arr((0, 0, 40, 40))
    images = []
    for k in range(10):  # each image: its face at 0.9, one false box at 0.1 * k
        boxes = arr((0, 0, 40, 40), (200, 200, 30, 30))
        images.append(bm.match(faces, arr(), boxes, np.array([0.9, 0.1 * k])))
    t = bm.calibrate(images, 0.1)  # one false positive allowed over ten images
    s = bm.score_set(images, t)
    assert s.false_per_image <= 0.1
    assert s.recall == 1.0
    assert 0.8 < t <= 0.9
    assert bm.score_set(images, t - 0.05).false_per_image > 0.1


def test_no_faces_anywhere_gives_nan_recall_by_size() -> None:
    m = bm.match(arr(), arr(), arr(), np.zeros(0))
    s = bm.score_set([m], 0.5)
    assert all(math.isnan(r) for r in s.recall_by_size)
    assert s.false_per_image == 0.0
