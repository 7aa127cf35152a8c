"""A session's results leave in seq order (stream/ordering.py): a late scored outcome is
dropped and counted, per stream (a modality; each audio track its own)."""

from __future__ import annotations

import numpy as np

from emostream import metrics
from emostream.pipeline.jobs import DropReason
from emostream.pipeline.outcomes import Dropped, FaceScores, Scored, VoiceScores
from emostream.stream.ordering import InOrder

from brokers import face_job, voice_job


def _face(seq: int) -> Scored[FaceScores]:
    job = face_job("s", seq).header()
    return Scored(job, "m/1", FaceScores([], np.zeros((0, 2), np.float32), ("a", "b")))


def _voice(seq: int, track: str) -> Scored[VoiceScores]:
    job = voice_job("s", seq, track=track).header()
    return Scored(job, "v/1", VoiceScores(np.zeros((1, 2), np.float32), ("a", "b")))


def _late() -> float:
    sample = metrics.FRAMES_DROPPED.labels("face", "out_of_order")
    return float(sample._value.get())


def test_a_late_scored_frame_is_dropped_and_counted() -> None:
    order, before = InOrder(), _late()
    assert order.admit(_face(1)).job.seq == 1
    assert isinstance(order.admit(_face(3)), Scored)
    late = order.admit(_face(2))
    assert isinstance(late, Dropped) and late.reason is DropReason.out_of_order
    assert isinstance(order.admit(_face(3)), Dropped)  # a duplicate is late too
    assert isinstance(order.admit(_face(4)), Scored)
    assert _late() == before + 2


def test_drops_pass_and_each_audio_track_is_its_own_stream() -> None:
    order = InOrder()
    assert isinstance(order.admit(_face(5)), Scored)
    dropped = Dropped(face_job("s", 2).header(), DropReason.superseded)
    assert order.admit(dropped) is dropped  # a drop sends nothing: not judged
    assert isinstance(order.admit(_voice(7, "agent")), Scored)
    assert isinstance(order.admit(_voice(6, "customer")), Scored)  # other track: not late
    assert isinstance(order.admit(_voice(5, "agent")), Dropped)
