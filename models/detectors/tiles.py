"""Tiling a frame for small faces, and merging what the tiles and the whole frame found.

The full-range BlazeFace model needs a face of about 12 px in its 192 px input, so on a
whole 1280 px photo it misses faces under ~80 px. Running it over overlapping tiles of
``16 x min_face`` px as well finds faces down to ``min_face``; the same face is then seen by
up to four tiles and by the whole-frame pass, and a face cut by a tile border gives a
partial box. ``merge`` keeps one box per face: whole boxes before cut ones, then by score,
dropping any box that overlaps a kept one (IoU) or lies mostly inside it or around it
(intersection over the smaller area).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: How much neighbouring tiles share (of the tile side): a face up to this size lies whole
#: in some tile. Measured on the 96-face crowd (tests/test_detector_range.py): 0.25 finds
#: 76, 0.33 finds 83 for 20 % more tiles; 0.4 adds a false face in two_people.jpg.
OVERLAP = 0.33
#: Intersection over the smaller area above which two boxes are one face.
CONTAIN = 0.6
#: A tile box this close (px) to a tile border inside the frame is taken as cut by it.
CUT_MARGIN = 2.0


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame, in its pixels."""

    x: int
    y: int
    w: int
    h: int

    def view(self, image: np.ndarray) -> np.ndarray:
        """The region of ``image`` as a numpy view (no copy)."""
        return image[self.y : self.y + self.h, self.x : self.x + self.w]


def spans(length: int, tile: int, overlap: float = OVERLAP) -> list[tuple[int, int]]:
    """``(start, size)`` of evenly spread tiles covering ``[0, length)``, neighbours
    sharing at least ``overlap`` of a tile; one span when it fits in one tile."""
    if length <= tile:
        return [(0, length)]
    step = tile * (1.0 - overlap)
    n = math.ceil((length - tile) / step) + 1
    return [(round(i * (length - tile) / (n - 1)), tile) for i in range(n)]


def tile_layout(width: int, height: int, tile: int, overlap: float = OVERLAP) -> list[Region]:
    """Overlapping tiles of side ``tile`` over a frame; none when the frame fits in one."""
    if max(width, height) <= tile:
        return []
    return [
        Region(x, y, w, h)
        for y, h in spans(height, tile, overlap)
        for x, w in spans(width, tile, overlap)
    ]


def cut_by(boxes: np.ndarray, region: Region, width: int, height: int) -> np.ndarray:
    """Which ``[x1, y1, x2, y2]`` frame-pixel boxes found in ``region`` reach one of its
    borders that lies inside the frame (the face may go on in the next tile)."""
    m = CUT_MARGIN
    left = (region.x > 0) & (boxes[:, 0] <= region.x + m)
    top = (region.y > 0) & (boxes[:, 1] <= region.y + m)
    right = (region.x + region.w < width) & (boxes[:, 2] >= region.x + region.w - m)
    bottom = (region.y + region.h < height) & (boxes[:, 3] >= region.y + region.h - m)
    return np.asarray(left | top | right | bottom)


def merge(
    boxes: np.ndarray,
    scores: np.ndarray,
    cut: np.ndarray | None = None,
    rank: np.ndarray | None = None,
    *,
    iou_threshold: float = 0.3,
    contain: float = CONTAIN,
) -> np.ndarray:
    """Indices of the ``[x1, y1, x2, y2]`` boxes to keep, one per face, best first.

    Hard NMS over every pass of a frame: boxes of a lower ``rank`` (the pass) come first,
    then whole boxes before ``cut`` ones, then by score; a box is dropped when its IoU with
    a kept box exceeds ``iou_threshold`` or when their intersection covers more than
    ``contain`` of the smaller of the two.
    """
    n = len(boxes)
    demoted = np.zeros(n, bool) if cut is None else cut.astype(bool)
    ranks = np.zeros(n, np.intp) if rank is None else rank
    order = np.lexsort((-scores, demoted, ranks))
    sides = np.clip(boxes[:, 2:4] - boxes[:, 0:2], 0, None)
    areas = sides[:, 0] * sides[:, 1]
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.asarray(kept)
            iw = np.minimum(boxes[i, 2], boxes[k, 2]) - np.maximum(boxes[i, 0], boxes[k, 0])
            ih = np.minimum(boxes[i, 3], boxes[k, 3]) - np.maximum(boxes[i, 1], boxes[k, 1])
            inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
            union = areas[i] + areas[k] - inter
            smaller = np.minimum(areas[i], areas[k])
            if np.any(inter > iou_threshold * union) or np.any(inter > contain * smaller):
                continue
        kept.append(int(i))
    return np.asarray(kept, np.intp)
