"""A scored outcome as its message (docs/ARCHITECTURE.md): the one place one is made.

Sessions, ``/v1/predict`` and ``emostream analyze`` all call ``face_message``; they differ
only in what they pass: a session its id and its tracker (stable ``track_id``s, optional
smoothing), ``analyze`` the file name (and a tracker for videos), ``/v1/predict`` neither.
Every caller passes ``results.unsure_below`` (``results_config.py``): a face or window whose
top probability is under it is ``unsure`` (and counted in ``emostream_unsure_results_total``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from emostream import metrics
from emostream.models.face_tracking.ids import IouTracker
from emostream.pipeline.jobs import Box, VoiceInfo
from emostream.pipeline.outcomes import FaceScores, Scored, Scores, VoiceScores
from emostream.schema import Face, FaceMessage, VoiceMessage


class Top(TypedDict):
    scores: dict[str, float]
    label: str
    confidence: float
    unsure: bool


def top(row: np.ndarray, classes: Sequence[str], unsure_below: float, modality: str) -> Top:
    """One row of probabilities as a message has it: per-class scores rounded to 5 places,
    the top class and its score, and whether that score is under ``unsure_below`` (the same
    for a face and a voice window; an unsure one is counted)."""
    k = int(np.argmax(row))
    confidence = round(float(row[k]), 5)
    unsure = confidence < unsure_below
    if unsure:
        metrics.UNSURE_RESULTS.labels(modality).inc()
    return Top(
        scores={c: round(float(p), 5) for c, p in zip(classes, row, strict=True)},
        label=classes[k],
        confidence=confidence,
        unsure=unsure,
    )


def faces(
    boxes: Sequence[Box],
    ids: Sequence[int],
    scores: np.ndarray,
    classes: Sequence[str],
    unsure_below: float,
) -> list[Face]:
    """Schema faces: a box and ``top`` of its scores each."""
    return [
        Face(
            track_id=tid,
            box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
            **top(row, classes, unsure_below, "face"),
        )
        for box, tid, row in zip(boxes, ids, scores, strict=True)
    ]


def face_message(
    scored: Scored[Scores],
    *,
    latency_s: float,
    unsure_below: float,
    tracker: IouTracker | None = None,
    session: str | None = None,
    source: str | None = None,
) -> FaceMessage:
    """The message for one scored frame; with a tracker, ids follow faces across frames."""
    job, result = scored.job, scored.result
    info = job.frame
    assert isinstance(result, FaceScores)
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
        width=info.width,
        height=info.height,
        faces=faces(result.boxes, ids, scores, result.classes, unsure_below),
    )


def voice_message(
    scored: Scored[Scores],
    *,
    latency_s: float,
    unsure_below: float,
    session: str | None = None,
    source: str | None = None,
) -> VoiceMessage:
    """The message for one scored speech window (silent windows: ``silence_message``)."""
    result = scored.result
    assert isinstance(result, VoiceScores)
    msg = silence_message(scored.job.window, latency_s=latency_s, session=session, source=source)
    top_row = top(result.scores.reshape(-1), result.classes, unsure_below, "voice")
    return msg.model_copy(update={"speech": True, "model": scored.model or None, **top_row})


def silence_message(
    info: VoiceInfo,
    *,
    latency_s: float,
    session: str | None = None,
    source: str | None = None,
) -> VoiceMessage:
    """A window voice activity detection found no speech in: said, never classified (and
    the frame of every voice message: ``voice_message`` adds the scores)."""
    return VoiceMessage(
        session=session,
        source=source,
        track=info.track,
        role=info.role,
        start=round(info.start, 3),
        end=round(info.end, 3),
        speech=False,
        latency_ms=round(latency_s * 1000, 3),
    )
