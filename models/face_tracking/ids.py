"""Keep a face's ``track_id`` across frames: greedy IoU matching against predicted boxes.

Each track carries a constant-velocity Kalman filter on its box (``box_motion``), and a new
frame's boxes are matched to where each track's box is *predicted* to be, not to where it
was last seen; a missed track keeps predicting for up to ``max_missed`` steps. So a face
that moves while hidden for a few frames (a hand, another head) keeps its id where the
last box no longer overlaps the new one, and two faces that cross keep theirs. A still face
matches as before (its predicted box is its last box exactly), a slow one nearly so.

One step is one ``update`` call, i.e. one processed frame (frames superseded under load
are not seen, so a step may span more than one frame interval; see ``box_motion``).
Optional smoothing is an exponential moving average of each track's scores (``alpha`` =
weight of the newest frame; 1.0 means no smoothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emostream.models.face_tracking.motion import BoxMotion, Rect
from emostream.pipeline.jobs import Box


def iou(a: Rect, b: Rect) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    track_id: int
    motion: BoxMotion
    missed: int = 0
    scores: np.ndarray | None = None


@dataclass
class IouTracker:
    min_iou: float = 0.3
    max_missed: int = 15  # steps a track survives without a match
    alpha: float = 1.0
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 1

    def predicted(self) -> dict[int, Rect]:
        """Each live track's box as the next ``update`` will match it, by track id."""
        return {t.track_id: t.motion.ahead() for t in self._tracks}

    def update(
        self, boxes: list[Box], scores: np.ndarray | None = None
    ) -> tuple[list[int], np.ndarray | None]:
        """Track ids for ``boxes`` (same order), and the smoothed scores if given."""
        for t in self._tracks:
            t.motion.predict()
        pairs = sorted(
            (
                (iou(t.motion.box(), b), ti, bi)
                for ti, t in enumerate(self._tracks)
                for bi, b in enumerate(boxes)
            ),
            reverse=True,
        )
        assigned: dict[int, _Track] = {}
        used: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in used or bi in assigned:
                continue
            used.add(ti)
            assigned[bi] = self._tracks[ti]
        for t_index, t in enumerate(self._tracks):
            if t_index not in used:
                t.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        ids: list[int] = []
        smoothed = None if scores is None else scores.copy()
        for bi, box in enumerate(boxes):
            track = assigned.get(bi)
            if track is None:
                track = _Track(self._next_id, BoxMotion(box))
                self._next_id += 1
                self._tracks.append(track)
            else:
                track.motion.correct(box)
            track.missed = 0
            if smoothed is not None:
                if track.scores is not None and self.alpha < 1.0:
                    smoothed[bi] = self.alpha * smoothed[bi] + (1 - self.alpha) * track.scores
                track.scores = smoothed[bi]
            ids.append(track.track_id)
        return ids, smoothed
