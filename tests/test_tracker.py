"""The tracker's motion model: ids that survive occlusions and crossings of moving faces.

Boxes are 60 px faces moving 12 px per frame (a head turning across a webcam frame at
15 fps); detector jitter is a seeded ±2 px per coordinate.
"""

from __future__ import annotations

import numpy as np
import pytest

from emostream.models.face_tracking import motion as bm
from emostream.models.face_tracking.ids import IouTracker, iou
from emostream.pipeline.jobs import Box

SIDE, STEP = 60, 12


def _moving(k: int, x0: int = 100, y: int = 200, step: int = STEP) -> Box:
    return (x0 + step * k, y, SIDE, SIDE)


def _jitter(box: Box, rng: np.random.Generator | None) -> Box:
    if rng is None:
        return box
    dx, dy, dw, dh = (int(v) for v in rng.integers(-2, 3, 4))
    x, y, w, h = box
    return (x + dx, y + dy, w + dw, h + dh)


@pytest.mark.parametrize("seed", [None, *range(10)])
def test_a_moving_face_hidden_for_six_frames_keeps_its_id(seed: int | None) -> None:
    rng = None if seed is None else np.random.default_rng(seed)
    t = IouTracker()
    for k in range(10):
        (first,), _ = t.update([_jitter(_moving(k), rng)])
    for _ in range(6):  # hidden: the track keeps predicting
        assert t.update([]) == ([], None)
    back = _jitter(_moving(16), rng)
    assert iou(_moving(9), back) < 0.3  # matched to its last box, it would be a new face
    assert t.update([back])[0] == [first]


def test_two_faces_crossing_paths_keep_their_ids() -> None:
    """Exact boxes: where they pass, the two detections are 6 px apart, which detector
    jitter of the same size makes a guess for any tracker."""
    a = [_moving(k, x0=100) for k in range(20)]
    b = [_moving(k, x0=334, y=204, step=-STEP) for k in range(20)]
    # Where they pass, a's last box overlaps b's next one more than its own: matching the
    # last boxes would swap the ids there.
    assert iou(a[9], b[10]) > iou(a[9], a[10])
    t = IouTracker()
    ids, _ = t.update([a[0], b[0]])
    for k in range(1, 20):
        order = [b[k], a[k]] if k % 2 else [a[k], b[k]]  # the detector's order varies
        got, _ = t.update(order)
        assert (got[::-1] if k % 2 else got) == ids, k


def test_a_face_gone_longer_than_max_missed_gets_a_new_id() -> None:
    t = IouTracker(max_missed=4)
    for k in range(10):
        (first,), _ = t.update([_moving(k)])
    for _ in range(5):
        t.update([])
    assert t.predicted() == {}
    (again,), _ = t.update([_moving(15)])  # where its motion would have put it
    assert again != first


def test_a_face_back_within_max_missed_keeps_its_id() -> None:
    t = IouTracker(max_missed=4)
    for k in range(10):
        (first,), _ = t.update([_moving(k)])
    for _ in range(4):
        t.update([])
    assert t.update([_moving(14)])[0] == [first]


def test_a_still_face_is_predicted_where_it_is() -> None:
    t = IouTracker()
    box = (140, 90, 80, 96)
    for _ in range(20):
        (tid,), _ = t.update([box])
        assert t.predicted() == {tid: tuple(float(v) for v in box)}


def test_a_still_face_with_detector_jitter_is_predicted_no_more_jittery() -> None:
    rng = np.random.default_rng(0)
    t = IouTracker()
    measured, predicted = [], []
    for _ in range(60):
        box = _jitter((140, 90, 80, 96), rng)
        (tid,), _ = t.update([box])
        measured.append(box)
        predicted.append(t.predicted()[tid])
    spread = np.std(np.array(predicted[10:]), axis=0)
    assert np.all(spread <= np.std(np.array(measured[10:]), axis=0))


def test_the_per_axis_filter_is_the_full_eight_state_kalman_filter() -> None:
    """The closed form (four 2-state filters) against the textbook matrices, step by step."""
    f = np.eye(8)
    f[:4, 4:] = np.eye(4)
    h = np.eye(4, 8)
    rng = np.random.default_rng(3)
    boxes: list[Box | None] = [_jitter(_moving(k), rng) for k in range(8)]
    boxes[3] = boxes[4] = None  # missed steps: predict only
    first = boxes[0]
    assert first is not None
    motion = bm.BoxMotion(first)
    z0 = np.array([first[0] + first[2] / 2, first[1] + first[3] / 2, first[2], first[3]])
    mean = np.r_[z0, np.zeros(4)]
    size = max(first[2], first[3])
    cov = np.diag(
        np.r_[np.full(4, bm.MEASUREMENT_NOISE * size), np.full(4, bm.INITIAL_VELOCITY * size)] ** 2
    )
    for box in boxes[1:]:
        s = max(mean[2], mean[3])
        noise = [bm.POSITION_NOISE] * 4 + [bm.VELOCITY_NOISE] * 2 + [bm.SIZE_VELOCITY_NOISE] * 2
        mean, cov = f @ mean, f @ cov @ f.T + np.diag((np.array(noise) * s) ** 2)
        motion.predict()
        if box is not None:
            z = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2, box[2], box[3]])
            r = np.eye(4) * (bm.MEASUREMENT_NOISE * max(mean[2], mean[3])) ** 2
            gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + r)
            mean, cov = mean + gain @ (z - h @ mean), (np.eye(8) - gain @ h) @ cov
            motion.correct(box)
        cx, cy, w, hh = mean[:4]
        assert motion.box() == pytest.approx((cx - w / 2, cy - hh / 2, w, hh), abs=1e-9)
