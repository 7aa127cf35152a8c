"""Box helpers every backend shares: hard NMS, and raw boxes to clipped ``Detection``s.

Each backend decodes its own head into ``[x1, y1, x2, y2]`` source-pixel boxes and scores;
what happens after that (suppression, clipping to the frame, dropping slivers, largest
first) is the same for all of them, so it lives here once.
"""

from __future__ import annotations

import numpy as np

from emostream.models.detectors.base import Detection
from emostream.models.detectors.ssd import nms


def hard_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Plain (not weighted) NMS: the best box of each overlapping group survives as is."""
    if not len(boxes):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return nms(boxes, scores, iou_threshold, weighted=False)


def to_detections(
    boxes: np.ndarray, scores: np.ndarray, width: int, height: int, min_size: int = 0
) -> list[Detection]:
    """``[x1, y1, x2, y2]`` boxes as ``Detection``s clipped to a ``width`` x ``height``
    frame, empty or narrower-than-``min_size`` ones dropped, largest first."""
    out: list[Detection] = []
    for (x1, y1, x2, y2), score in zip(boxes, scores, strict=True):
        px1, py1 = max(0.0, float(x1)), max(0.0, float(y1))
        px2, py2 = min(float(width), float(x2)), min(float(height), float(y2))
        box = (round(px1), round(py1), round(px2 - px1), round(py2 - py1))
        if box[2] <= 0 or box[3] <= 0 or box[2] < min_size:
            continue
        out.append(Detection(box, float(score)))
    out.sort(key=lambda d: d.box[2] * d.box[3], reverse=True)
    return out


def scaled_size(width: int, height: int, max_side: int) -> tuple[float, int, int]:
    """The scale that brings the longer side down to ``max_side`` (never up; 0: keep), and
    the scaled size."""
    scale = 1.0 if max_side <= 0 else min(1.0, max_side / max(width, height))
    return scale, max(1, round(width * scale)), max(1, round(height * scale))
