"""A scored outcome as the DESIGN.md message: the one place a ``FaceMessage`` is made.

Sessions, ``/v1/predict`` and ``emostream analyze`` all call ``face_message``; they differ
only in what they pass: a session its id and its tracker (stable ``track_id``s, optional
smoothing), ``analyze`` the file name (and a tracker for videos), ``/v1/predict`` neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emostream.models.tracker import IouTracker
from emostream.pipeline.jobs import Box
from emostream.pipeline.outcomes import FaceScores, Scored
from emostream.schema import Face, FaceMessage


def faces(
    boxes: Sequence[Box], ids: Sequence[int], scores: np.ndarray, classes: Sequence[str]
) -> list[Face]:
    """Schema faces: per-class scores rounded to 5 places, the top class and its score."""
    out = []
    for box, tid, row in zip(boxes, ids, scores, strict=True):
        k = int(np.argmax(row))
        out.append(
            Face(
                track_id=tid,
                box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
                scores={c: round(float(p), 5) for c, p in zip(classes, row, strict=True)},
                label=classes[k],
                confidence=round(float(row[k]), 5),
            )
        )
    return out


def face_message(
    scored: Scored[FaceScores],
    *,
    latency_s: float,
    tracker: IouTracker | None = None,
    session: str | None = None,
    source: str | None = None,
) -> FaceMessage:
    """The message for one scored frame; with a tracker, ids follow faces across frames."""
    job, result = scored.job, scored.result
    if tracker is not None:
        ids, smoothed = tracker.update(result.boxes, result.scores)
        scores = result.scores if smoothed is None else smoothed
    else:
        ids, scores = list(range(1, len(result.boxes) + 1)), result.scores
    return FaceMessage(
        session=session,
        source=source,
        seq=job.seq,
        pts=None if job.pts is None else round(job.pts, 6),
        latency_ms=round(latency_s * 1000, 3),
        model=scored.model or None,
        width=job.info.width,
        height=job.info.height,
        faces=faces(result.boxes, ids, scores, result.classes),
    )
