"""Carry face boxes from one frame to the next with sparse optical flow.

Between two detector runs a face's box follows the motion of the texture inside it:
corners found in the box on the previous frame (Shi-Tomasi) are tracked into the current
frame with pyramidal Lucas-Kanade, then back again; a point counts only when the round trip
lands within ``FB_MAX_PX`` of where it started (Kalal et al.'s forward-backward check). The
box moves by the points' median shift and scales by the median change of their spread.
``quality`` is the share of points that passed: low when the face turned away, was covered
or left, which is exactly when the detector should look again.

Why flow rather than a Kalman filter alone: a filter only extrapolates, so it cannot tell a
face that stopped from one that kept going; flow measures every frame for about 0.3 ms.
All boxes of a frame are tracked in one LK call (one image pyramid per frame, not per box).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emostream.pipeline.jobs import Box

FB_MAX_PX = 1.0  # forward-backward error allowed for a point, in pixels
MIN_POINTS = 6  # fewer corners than this in a box: nothing to follow (quality 0)
MAX_POINTS = 20  # corners per box: the median needs few, LK time grows with each
MARGIN = 48  # px around the boxes that flow looks at: beyond what a face moves in a frame
_WIN = (15, 15)
_LEVELS = 2
_STOP = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)


@dataclass(frozen=True)
class Followed:
    """Where a box went: its new position and how many of its points agreed (0..1)."""

    box: Box
    quality: float


def _corners(gray: np.ndarray, box: Box) -> np.ndarray:
    """Up to ``MAX_POINTS`` corners inside the central part of the box, (K, 1, 2) float32."""
    x, y, w, h = box
    ih, iw = gray.shape[:2]
    # the middle of the box: the face, not the background its corners may hold
    x0, y0 = max(0, x + w // 8), max(0, y + h // 8)
    x1, y1 = min(iw, x + w - w // 8), min(ih, y + h - h // 8)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return np.zeros((0, 1, 2), np.float32)
    found = cv2.goodFeaturesToTrack(
        gray[y0:y1, x0:x1],
        maxCorners=MAX_POINTS,
        qualityLevel=0.01,
        minDistance=max(2, min(w, h) // 12),
        blockSize=3,
    )
    if found is None:
        return np.zeros((0, 1, 2), np.float32)
    pts = np.asarray(found, np.float32).reshape(-1, 1, 2)
    pts[:, 0, 0] += x0
    pts[:, 0, 1] += y0
    return pts


def _spread(pts: np.ndarray) -> np.ndarray:
    """Each point's distance from the points' centroid: scale is their ratio."""
    return np.asarray(np.linalg.norm(pts - pts.mean(axis=0), axis=1))


def _moved(box: Box, before: np.ndarray, after: np.ndarray, shape: tuple[int, ...]) -> Box:
    dx, dy = np.median(after - before, axis=0)
    s0, s1 = _spread(before), _spread(after)
    ok = s0 > 1.0
    scale = float(np.median(s1[ok] / s0[ok])) if ok.sum() >= 3 else 1.0
    scale = min(1.25, max(0.8, scale))  # one frame cannot change a face's size much
    x, y, w, h = box
    cx, cy = x + w / 2 + float(dx), y + h / 2 + float(dy)
    nw, nh = w * scale, h * scale
    ih, iw = shape[:2]
    x0, y0 = max(0.0, cx - nw / 2), max(0.0, cy - nh / 2)
    x1, y1 = min(float(iw), cx + nw / 2), min(float(ih), cy + nh / 2)
    return (round(x0), round(y0), max(0, round(x1 - x0)), max(0, round(y1 - y0)))


def _lk(a: np.ndarray, b: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pyramidal Lucas-Kanade from ``a`` to ``b``: (points, status, error)."""
    nxt = np.empty_like(pts)
    out = cv2.calcOpticalFlowPyrLK(a, b, pts, nxt, winSize=_WIN, maxLevel=_LEVELS, criteria=_STOP)
    return tuple(np.asarray(x) for x in out)


def _window(boxes: list[Box], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The part of the frame flow needs: the boxes and room to move (x0, y0, x1, y1).

    LK builds an image pyramid of what it is given; for one webcam face that is a fifth of
    the frame. Room: ``MARGIN`` px (what the pyramid's search reaches) or a third of the
    largest box, whichever is more.
    """
    ih, iw = shape[:2]
    room = max(MARGIN, max(max(w, h) for _, _, w, h in boxes) // 3)
    x0 = max(0, min(x for x, _, _, _ in boxes) - room)
    y0 = max(0, min(y for _, y, _, _ in boxes) - room)
    x1 = min(iw, max(x + w for x, _, w, _ in boxes) + room)
    y1 = min(ih, max(y + h for _, y, _, h in boxes) + room)
    return x0, y0, x1, y1


def follow(prev: np.ndarray, gray: np.ndarray, boxes: list[Box]) -> list[Followed]:
    """Each box of ``prev`` (a gray frame) carried into ``gray`` (same size), in order."""
    if prev.shape != gray.shape:
        raise ValueError(f"frames differ in size: {prev.shape} then {gray.shape}")
    out = [Followed(b, 0.0) for b in boxes]
    if not boxes:
        return out
    x0, y0, x1, y1 = _window(boxes, gray.shape)
    a, b = prev[y0:y1, x0:x1], gray[y0:y1, x0:x1]
    starts = [_corners(a, (x - x0, y - y0, w, h)) for x, y, w, h in boxes]
    counts = [len(p) for p in starts]
    if sum(counts) == 0:
        return out
    p0 = np.concatenate(starts)
    p1, st1, _ = _lk(a, b, p0)
    back, st2, _ = _lk(b, a, p1)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    good = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < FB_MAX_PX)
    origin = np.array([x0, y0], np.float32)
    start = 0
    for i, (box, n) in enumerate(zip(boxes, counts, strict=True)):
        sl = slice(start, start + n)
        start += n
        if n < MIN_POINTS:
            continue
        ok = good[sl]
        if ok.sum() < MIN_POINTS // 2:
            continue
        before = p0[sl].reshape(-1, 2)[ok] + origin
        after = p1[sl].reshape(-1, 2)[ok] + origin
        out[i] = Followed(_moved(box, before, after, gray.shape), float(ok.mean()))
    return out
