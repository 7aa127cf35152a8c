"""Box helpers every backend shares: hard NMS, and raw boxes to clipped ``Detection``s.

Each backend decodes its own head into ``[x1, y1, x2, y2]`` source-pixel boxes and scores;
what happens after that (suppression, clipping to the frame, dropping slivers, largest
first) is the same for all of them, so it lives here once.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from emostream.models.detectors.base import Detection


def nms_indices(
    boxes: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    mode: Literal["iou", "min"] = "iou",
) -> np.ndarray:
    """Indices of the ``[x1, y1, x2, y2]`` boxes plain NMS keeps, best score first: a box
    goes when its overlap with a kept one exceeds ``threshold``; overlap is IoU, or ("min",
    MTCNN's last stage) intersection over the smaller area."""
    order = np.argsort(-scores, kind="stable")
    sides = np.clip(boxes[:, 2:4] - boxes[:, 0:2], 0, None)
    areas = sides[:, 0] * sides[:, 1]
    kept: list[int] = []
    while len(order):
        i, rest = order[0], order[1:]
        kept.append(int(i))
        iw = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        ih = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        if mode == "min":
            denom = np.minimum(areas[i], areas[rest])
        else:
            denom = areas[i] + areas[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-12)]
    return np.asarray(kept, np.intp)


def hard_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Plain (not weighted) NMS: the best box of each overlapping group survives as is."""
    keep = nms_indices(boxes, scores, iou_threshold)
    return boxes[keep].reshape(-1, 4).astype(np.float32), scores[keep].astype(np.float32)


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
