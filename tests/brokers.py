"""Jobs, broker settings and result readers that the broker, Redis and voice tests share.

One home for what those test files used to declare each for itself. The ``ingest`` fixture
(a ``RedisIngest`` on the test's own redis-server) is in ``conftest.py``, built from
:func:`broker_config`.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np

from emostream import metrics
from emostream.broker.base import IngestBroker
from emostream.broker.broker_config import BrokerConfig
from emostream.pipeline.jobs import FrameInfo, Job, VoiceInfo
from emostream.pipeline.outcomes import SessionEvent

#: What a face job carries when a test does not care: a flat grey 64x48 frame.
GREY = np.full((48, 64, 3), 80, np.uint8)
#: Samples of one 1.5 s voice window at 16 kHz.
WINDOW = 24000
#: The failure guard of :func:`next_event`: a result that takes this long is not coming.
RESULT_GUARD_S = 60.0


def face_job(
    session: str,
    seq: int,
    frame: np.ndarray | None = None,
    *,
    scale: float = 1.0,
    deadline_s: float | None = 30.0,
) -> Job:
    """A face job for ``session``: ``frame`` (default :data:`GREY`) at 15 fps.

    ``scale`` says the frame was downscaled by that much on arrival (so the source was
    ``frame / scale`` pixels). ``deadline_s`` from now: 30 s, so that a loaded machine
    never drops a test's job as late; negative for a job already late; None leaves the
    deadline to the broker's config.
    """
    payload = GREY.copy() if frame is None else frame
    h, w = payload.shape[:2]
    info = FrameInfo(round(w / scale), round(h / scale), scale)
    deadline = math.inf if deadline_s is None else time.monotonic() + deadline_s
    return Job(session, seq, seq / 15, payload, info, deadline=deadline)


def voice_job(
    session: str,
    seq: int,
    samples: np.ndarray | None = None,
    *,
    track: str = "0",
    start: float | None = None,
    rate: int = 16000,
    deadline_s: float | None = None,
    reply_to: str = "",
) -> Job:
    """A voice job: the 1.5 s window of ``track`` from ``start`` (default ``seq`` * 0.5 s,
    the hop), ``samples`` at ``rate`` (default a -0.5..0.5 ramp of :data:`WINDOW` samples).

    ``deadline_s`` as in :func:`face_job`, but None (the broker's voice deadline) by
    default.
    """
    x = np.linspace(-0.5, 0.5, WINDOW, dtype=np.float32) if samples is None else samples
    begin = seq * 0.5 if start is None else start
    info = VoiceInfo(track, begin, begin + 1.5, rate)
    deadline = math.inf if deadline_s is None else time.monotonic() + deadline_s
    return Job(session, seq, begin, x, info, deadline=deadline, reply_to=reply_to)


def broker_config(url: str = "memory", **kw: Any) -> BrokerConfig:
    """The tests' broker: a job lives 30 s (a slow machine never makes one late), and a
    dead worker's jobs are claimed after 0.2 s, looked for every 0.1 s (so that the claim
    tests do not wait on the production timings). ``kw`` overrides any of it."""
    settings: dict[str, Any] = {"claim_idle_ms": 200, "claim_interval_ms": 100}
    settings["deadline_ms"] = 30_000
    return BrokerConfig(url=url, **{**settings, **kw})


def dropped(reason: str, modality: str = "face") -> float:
    """``emostream_frames_dropped_total{modality, reason}`` in this process."""
    child = metrics.FRAMES_DROPPED.labels(modality, reason)
    return float(child._value.get())


async def next_event(
    broker: IngestBroker, session: str, timeout_s: float = RESULT_GUARD_S
) -> SessionEvent:
    """The next result of ``session``; fails when its stream ends or after ``timeout_s``
    (a failure guard, not a speed check)."""

    async def first() -> SessionEvent:
        async for event in broker.results(session):
            return event
        raise AssertionError("result stream ended")

    return await asyncio.wait_for(first(), timeout_s)
