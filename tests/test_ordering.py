"""A session's results leave in ``seq`` order per stream (``stream/ordering.py``).

With a broker that hands outcomes over out of order (as two workers do), a late scored
outcome is dropped as ``out_of_order``, counted in the metric and the session's tally;
each audio track is its own stream. Then for real: one ``RedisIngest`` and two workers
on a real redis-server, one of them slow on some frames, so newer frames overtake.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from emostream.broker.base import IngestBroker
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.redis_worker import RedisWorker
from emostream.models.batching import BatchWorker
from emostream.pipeline.jobs import DropReason, Job
from emostream.pipeline.outcomes import (
    Dropped,
    FaceScores,
    Failed,
    Outcome,
    Scored,
    Scores,
    SessionEvent,
    VoiceScores,
)
from emostream.stream.server_config import SessionConfig
from emostream.stream.session import Session

from brokers import broker_config, dropped, face_job, voice_job
from redis_server import RedisServer

CLASSES = ("a", "b")


def _face(seq: int) -> Scored[FaceScores]:
    scores = FaceScores([], np.zeros((0, 2), np.float32), CLASSES)
    return Scored(face_job("s", seq).header(), "m/1", scores)


def _voice(seq: int, track: str) -> Scored[VoiceScores]:
    scores = VoiceScores(np.array([[0.3, 0.7]], np.float32), CLASSES)
    return Scored(voice_job("s", seq, track=track).header(), "v/1", scores)


class AsGiven(IngestBroker):
    """Hands session "s" the events it was given, in that order, then says it is done."""

    def __init__(self, events: Sequence[SessionEvent]) -> None:
        self.config = BrokerConfig()
        self.events = events
        self.done = asyncio.Event()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def open_session(self, session: str) -> None: ...

    async def close_session(self, session: str) -> None: ...

    async def submit(self, job: Job) -> None: ...

    async def results(self, session: str) -> AsyncIterator[SessionEvent]:
        for event in self.events:
            yield event
        self.done.set()  # the session has handled the last one: it asked for the next


async def _session(broker: IngestBroker, pool: ThreadPoolExecutor) -> tuple[Session, list[dict]]:
    session = Session(broker, SessionConfig(), pool, session_id="s")
    sent: list[dict] = []
    session.add_output(lambda text: sent.append(json.loads(text)))
    await session.start()
    return session, sent


async def test_late_results_are_dropped_per_stream_and_counted() -> None:
    failed = Failed(face_job("s", 5).header(), "bad payload")
    superseded = Dropped(face_job("s", 7).header(), DropReason.superseded)
    events: list[SessionEvent] = [
        *(_face(n) for n in (1, 3, 2, 4, 4, 6)),  # 2 late, the second 4 a repeat
        failed,  # no message: neither judged nor moving the mark (already an error)
        _face(5),  # late: 6 was sent
        superseded,
        _voice(2, "a"),
        _voice(1, "b"),  # one counter for both tracks, but b's first window: in order
        _voice(3, "a"),
        _voice(4, "b"),
        _voice(3, "b"),  # late on track b
        _voice(1, "a"),  # late on track a
    ]
    broker = AsGiven(events)
    before = {m: dropped("out_of_order", m) for m in ("face", "voice")}
    with ThreadPoolExecutor(1) as pool:
        session, sent = await _session(broker, pool)
        await asyncio.wait_for(broker.done.wait(), 30)  # a failure guard
        await session.close()
    assert [m["seq"] for m in sent if m["type"] == "face"] == [1, 3, 4, 6]
    voices = [(m["track"], m["start"]) for m in sent if m["type"] == "voice"]
    assert voices == [("a", 1.0), ("b", 0.5), ("a", 1.5), ("b", 2.0)]
    assert session.view.dropped == {"out_of_order": 5, "error": 1, "superseded": 1}
    assert dropped("out_of_order", "face") - before["face"] == 3
    assert dropped("out_of_order", "voice") - before["voice"] == 2


# -- for real: two workers on one redis-server -----------------------------------------


class _NoTally:
    def observe(self, scored: Scored[Scores]) -> None: ...


class SlowOnSome:
    """Scores every frame with no faces; a batch holding a seq of 1 mod 4 takes 0.3 s, so
    while its worker is busy the other one answers the newer frames first."""

    modality = "face"
    model = "slow-on-some/1"
    provider = "CPUExecutionProvider"
    tally = _NoTally()

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        if any(j.seq % 4 == 1 for j in jobs):
            time.sleep(0.3)
        scores = FaceScores([], np.zeros((0, 2), np.float32), CLASSES)
        return [Scored(j.header(), self.model, scores) for j in jobs]


@pytest.mark.redis
async def test_with_two_workers_a_session_sends_in_seq_order(redis_server: RedisServer) -> None:
    # no claim while the slow batch runs: each frame is answered once
    config = broker_config(redis_server.url, claim_idle_ms=10_000)
    ingest = RedisIngest(config)
    await ingest.start()
    brokers = [RedisWorker(config, consumer=f"w{i}") for i in range(2)]
    workers = [BatchWorker(b, SlowOnSome()) for b in brokers]
    for w in workers:
        w.start()
    before = dropped("out_of_order")
    frames = 60
    try:
        with ThreadPoolExecutor(1) as pool:
            session, sent = await _session(ingest, pool)
            for _ in range(frames):
                await session.submit(face_job("s", session.next_seq("face")))
                await asyncio.sleep(0.02)
            guard = time.monotonic() + 60  # a failure guard, not a speed check
            while len(sent) + sum(session.view.dropped.values()) < frames:
                assert time.monotonic() < guard, (len(sent), session.view.dropped)
                await asyncio.sleep(0.05)
            await session.close()
    finally:
        for w in workers:
            await w.stop()
        for b in brokers:
            await b.close()
        await ingest.close()
    seqs = [m["seq"] for m in sent if m["type"] == "face"]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    late = session.view.dropped.get("out_of_order", 0)
    assert late > 0, session.view.dropped  # the slow batches were overtaken
    assert dropped("out_of_order") - before == late
    assert len(seqs) + sum(session.view.dropped.values()) == frames
