"""Scoring face boxes against hand-drawn ones: matches at IoU 0.5, AP, recall by size.

The rules are the PASCAL VOC / WIDER FACE ones, kept small enough to read:

- a detection is *right* when its IoU with a labelled face is at least ``IOU`` (0.5) and no
  surer detection took that face first (detections are matched in score order);
- a detection that matches no face but lies mostly (``IGNORE_COVER``) inside an ``ignore``
  region (a crowd too small to label) is neither right nor wrong;
- average precision is the area under the all-point interpolated precision/recall curve
  (VOC 2010 on), over every image's detections pooled by score;
- a face's size is its box width in pixels: ``< 32``, ``32-96``, ``> 96``.

A detector is run once with a low score threshold, and every figure at a higher threshold
(the operating point, a calibrated one) is read from the same detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU = 0.5
IGNORE_COVER = 0.5
#: Upper bounds of the size classes (box width, px); the last class is open.
SIZE_EDGES = (32, 96)
SIZE_NAMES = ("<32", "32-96", ">96")
#: The offline goal counts faces at least this wide (issue 23: 90 % of faces >= 20 px).
GOAL_WIDTH = 20

Box = tuple[int, int, int, int] | Sequence[float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every ``a`` box against every ``b`` box; both (n, 4) as x, y, w, h."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.asarray(inter / np.maximum(union, 1e-9))


def covered(a: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share of each ``a`` box's area inside its most-covering region."""
    if len(a) == 0 or len(regions) == 0:
        return np.zeros(len(a))
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    rx2, ry2 = regions[:, 0] + regions[:, 2], regions[:, 1] + regions[:, 3]
    iw = np.minimum(ax2[:, None], rx2[None]) - np.maximum(a[:, None, 0], regions[None, :, 0])
    ih = np.minimum(ay2[:, None], ry2[None]) - np.maximum(a[:, None, 1], regions[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    return np.asarray((inter / np.maximum(a[:, 2] * a[:, 3], 1e-9)[:, None]).max(axis=1))


def size_class(width: float) -> int:
    """Index into ``SIZE_NAMES`` for a face ``width`` px wide."""
    return int(np.searchsorted(SIZE_EDGES, width, side="right"))


@dataclass(frozen=True)
class ImageScore:
    """One image's detections, each marked right (1), wrong (0) or ignored (-1), and which
    labelled face each right one found."""

    scores: np.ndarray  # (d,) float
    verdict: np.ndarray  # (d,) int: 1 right, 0 wrong, -1 ignored
    found: np.ndarray  # (d,) int: the face index a right detection matched, else -1
    face_sizes: np.ndarray  # (f,) int: size class of each labelled face
    face_widths: np.ndarray  # (f,) float: each labelled face's width


def match(
    faces: np.ndarray, ignore: np.ndarray, boxes: np.ndarray, scores: np.ndarray
) -> ImageScore:
    """Greedy VOC matching of one image's detections (surest first) to its faces."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    ious = iou_matrix(boxes, faces)
    cover = covered(boxes, ignore)
    taken = np.zeros(len(faces), bool)
    verdict = np.zeros(len(boxes), int)
    found = np.full(len(boxes), -1)
    for d in range(len(boxes)):
        free = np.where(taken, -1.0, ious[d]) if len(faces) else np.zeros(0)
        best = int(np.argmax(free)) if len(free) else -1
        if best >= 0 and free[best] >= IOU:
            taken[best] = True
            verdict[d], found[d] = 1, best
        elif len(faces) and ious[d].max() >= IOU:
            verdict[d] = 0  # a second box on a face already found is a false positive
        elif cover[d] >= IGNORE_COVER:
            verdict[d] = -1
    sizes = np.array([size_class(w) for w in faces[:, 2]], int) if len(faces) else np.zeros(0, int)
    return ImageScore(scores, verdict, found, sizes, faces[:, 2].astype(float))


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the all-point interpolated precision/recall curve."""
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass(frozen=True)
class SetScore:
    """A detector's figures on the whole set at one score threshold."""

    threshold: float
    ap: float  # over every score (independent of the threshold)
    precision: float
    recall: float
    recall_by_size: tuple[float, ...]  # per SIZE_NAMES; nan where the set has none
    recall_goal: float  # of the faces at least GOAL_WIDTH wide
    faces_by_size: tuple[int, ...]
    false_per_image: float
    curve: tuple[np.ndarray, np.ndarray, np.ndarray]  # thresholds, recall, precision


def pooled_curve(images: Sequence[ImageScore]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (descending), recall and precision at each, pooled over ``images``."""
    faces = sum(len(i.face_sizes) for i in images)
    scores = np.concatenate([i.scores[i.verdict >= 0] for i in images] or [np.zeros(0)])
    right = np.concatenate([i.verdict[i.verdict >= 0] for i in images] or [np.zeros(0, int)])
    order = np.argsort(-scores, kind="stable")
    scores, right = scores[order], right[order]
    tp = np.cumsum(right)
    fp = np.cumsum(1 - right)
    recall = tp / max(faces, 1)
    precision = tp / np.maximum(tp + fp, 1)
    return scores, recall, precision


def score_set(images: Sequence[ImageScore], threshold: float) -> SetScore:
    """The set's figures at ``threshold`` (AP over all scores)."""
    thresholds, recall, precision = pooled_curve(images)
    ap = average_precision(recall, precision)
    tp = fp = goal_found = goal_total = 0
    found = np.zeros(len(SIZE_NAMES))
    total = np.zeros(len(SIZE_NAMES), int)
    for im in images:
        kept = im.scores >= threshold
        tp += int(np.sum((im.verdict == 1) & kept))
        fp += int(np.sum((im.verdict == 0) & kept))
        hit = im.found[(im.verdict == 1) & kept]
        np.add.at(found, im.face_sizes[hit], 1)
        np.add.at(total, im.face_sizes, 1)
        goal_found += int(np.sum(im.face_widths[hit] >= GOAL_WIDTH))
        goal_total += int(np.sum(im.face_widths >= GOAL_WIDTH))
    faces = int(total.sum())
    by_size = tuple(float(f / t) if t else float("nan") for f, t in zip(found, total, strict=True))
    return SetScore(
        threshold=threshold,
        ap=ap,
        precision=tp / max(tp + fp, 1),
        recall=tp / max(faces, 1),
        recall_by_size=by_size,
        recall_goal=goal_found / max(goal_total, 1),
        faces_by_size=tuple(int(t) for t in total),
        false_per_image=fp / max(len(images), 1),
        curve=(thresholds, recall, precision),
    )


def calibrate(images: Sequence[ImageScore], max_false_per_image: float) -> float:
    """The lowest threshold (most recall) whose false positives per image stay within
    ``max_false_per_image`` on the set: the operating point, read off the set, not guessed.

    With ``k`` false positives allowed, the threshold sits just above the ``k+1``-th surest
    wrong detection (or at the least sure detection when there are no more than ``k``)."""
    allowed = int(np.floor(max_false_per_image * len(images) + 1e-9))
    wrong = np.sort(np.concatenate([i.scores[i.verdict == 0] for i in images] or [np.zeros(0)]))
    if len(wrong) <= allowed:
        every = np.concatenate([i.scores for i in images] or [np.zeros(1)])
        return float(every.min())
    return float(np.nextafter(wrong[::-1][allowed], np.inf))
