"""The broker's two roles, each against both implementations, and the batching worker.

``pair`` gives the ingest side and the worker side of one broker: the same in-process
object twice for ``memory``; ``RedisIngest`` and ``RedisWorker`` on one real redis-server
for ``redis``. Every contract test below runs on both.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from local_broker import Local, local_broker

from emostream.broker.base import IngestBroker, UnknownSessionError, WorkerBroker
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.memory import MemoryBroker
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.redis_worker import RedisWorker
from emostream.models.batching import BatchWorker, WorkerConfig
from emostream.models.face import FaceAnalyzer
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import DropReason, FrameInfo, Job, Modality, VoiceInfo
from emostream.pipeline.outcomes import (
    BrokerNotice,
    Dropped,
    FaceScores,
    Failed,
    Scored,
    SessionEvent,
)
from emostream.stream.media import read_image

from brokers import dropped, face_job, voice_job
from redis_server import RedisServer

CONFIG = BrokerConfig(max_in_flight=2, deadline_ms=30_000)


@dataclass
class Pair:
    ingest: IngestBroker
    worker: WorkerBroker


@pytest.fixture(params=["memory", "local", pytest.param("redis", marks=pytest.mark.redis)])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    """Each implementation; the Redis one against its own real redis-server; the local
    multi-process one with its hub, ingest and inference sides on real socket pairs."""
    server: RedisServer | None = None
    local: Local | None = None
    if request.param == "memory":
        both = MemoryBroker(CONFIG)
        p = Pair(both, both)
    elif request.param == "local":
        local = await local_broker(CONFIG)
        p = Pair(local.ingest, local.worker)
    else:
        server = RedisServer(tmp_path / "redis").start()
        config = CONFIG.model_copy(update={"url": server.url})
        p = Pair(RedisIngest(config), RedisWorker(config, consumer="test-worker"))
    if local is None:
        await p.ingest.start()
        await p.worker.start()
    yield p
    if local is not None:
        await local.close()
        return
    await p.ingest.close()
    if p.worker is not p.ingest:
        await p.worker.close()
    if server is not None:
        server.stop()


def _scored(job: Job) -> Scored[FaceScores]:
    return Scored(job.header(), "m/1", FaceScores([], np.zeros((0, 2), np.float32), ("a", "b")))


async def _drain(b: IngestBroker, session: str, n: int) -> list[SessionEvent]:
    out: list[SessionEvent] = []
    async for r in b.results(session):
        out.append(r)
        if len(out) == n:
            break
    return out


def _seq(event: SessionEvent) -> int:
    assert not isinstance(event, BrokerNotice)
    return event.job.seq


# -- both roles together: routing -------------------------------------------------------


async def test_round_trip_routes_results_to_their_session(pair: Pair) -> None:
    await pair.ingest.open_session("a")
    await pair.ingest.open_session("b")
    await pair.ingest.submit(face_job("a", 1))
    await pair.ingest.submit(face_job("b", 1))
    jobs = await pair.worker.take("face", 8, 0.0)
    assert sorted(j.session for j in jobs) == ["a", "b"]
    await pair.worker.publish([_scored(j) for j in jobs])
    (ra,) = await _drain(pair.ingest, "a", 1)
    (rb,) = await _drain(pair.ingest, "b", 1)
    assert isinstance(ra, Scored) and isinstance(rb, Scored)
    assert (ra.job.session, rb.job.session) == ("a", "b")
    assert ra.model == "m/1" and ra.result.classes == ("a", "b")


async def test_outcomes_keep_their_kind_and_frame_facts(pair: Pair) -> None:
    """Dropped and failed outcomes come back as such, with the frame's typed fields."""
    await pair.ingest.open_session("s")
    for seq in (1, 2):
        await pair.ingest.submit(face_job("s", seq, np.zeros((24, 32, 3), np.uint8), scale=0.5))
    first, second = await pair.worker.take("face", 8, 0.0)
    await pair.worker.publish([Failed(first.header(), "bad"), Dropped(second, DropReason.error)])
    got = await _drain(pair.ingest, "s", 2)
    assert isinstance(got[0], Failed) and got[0].error == "bad"
    assert isinstance(got[1], Dropped) and got[1].reason is DropReason.error
    assert got[0].job.info == FrameInfo(64, 48, 0.5) and got[0].job.pts == pytest.approx(1 / 15)


# -- the ingest role ----------------------------------------------------------------------


async def test_voice_windows_queue_up_instead_of_superseding_each_other(pair: Pair) -> None:
    """Every speech window counts: 8 windows stay queued where only 2 frames would, and a
    window's deadline is the voice one (``voice_deadline_ms``), from its end."""
    await pair.ingest.open_session("s")
    for seq in range(1, 9):
        info = VoiceInfo(track="0", start=seq * 0.5, end=seq * 0.5 + 1.5)
        await pair.ingest.submit(Job("s", seq, info.start, np.zeros(24000, np.float32), info))
    for seq in range(1, 5):  # frames of the same session: the newest two stay
        await pair.ingest.submit(face_job("s", seq))
    assert await pair.worker.depth("voice") == 8
    voice = await pair.worker.take("voice", 16, 0.0)
    assert sorted(j.seq for j in voice) == list(range(1, 9))
    assert all(j.window.track == "0" and j.payload.shape == (24000,) for j in voice)
    late = CONFIG.voice_deadline_ms / 1000
    assert all(j.deadline == pytest.approx(j.created + late, abs=0.01) for j in voice)
    assert len(await pair.worker.take("face", 16, 0.0)) == CONFIG.max_in_flight


async def test_newest_frame_wins_and_superseded_frames_are_counted(pair: Pair) -> None:
    await pair.ingest.open_session("s")
    before = dropped("superseded")
    for seq in range(5):
        await pair.ingest.submit(face_job("s", seq))
    assert await pair.worker.depth("face") == 2
    taken = await pair.worker.take("face", 8, 0.0)
    assert [j.seq for j in taken] == [3, 4]
    drops = await _drain(pair.ingest, "s", 3)
    assert all(isinstance(d, Dropped) and d.reason is DropReason.superseded for d in drops)
    assert [_seq(d) for d in drops] == [0, 1, 2]
    assert dropped("superseded") - before == 3


async def test_closing_a_session_drops_its_queue_and_ends_its_results(pair: Pair) -> None:
    await pair.ingest.open_session("s")
    await pair.ingest.submit(face_job("s", 1))
    before = dropped("session_closed")

    async def read_all() -> list[SessionEvent]:
        return [r async for r in pair.ingest.results("s")]

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0)  # the reader is waiting on the stream
    await pair.ingest.close_session("s")
    assert await asyncio.wait_for(reader, 10) == []  # the stream ended, nothing delivered
    assert await pair.worker.depth("face") == 0
    assert dropped("session_closed") - before == 1
    with pytest.raises(UnknownSessionError):
        await pair.ingest.submit(face_job("s", 2))


async def test_submit_to_an_unknown_session_is_refused(pair: Pair) -> None:
    with pytest.raises(UnknownSessionError):
        await pair.ingest.submit(face_job("nobody", 1))
    with pytest.raises(UnknownSessionError):
        await anext(aiter(pair.ingest.results("nobody")))


# -- the worker role ----------------------------------------------------------------------


async def test_jobs_past_their_deadline_are_dropped_not_taken(pair: Pair) -> None:
    await pair.ingest.open_session("s")
    before = dropped("deadline")
    await pair.ingest.submit(face_job("s", 1, deadline_s=-1))
    await pair.ingest.submit(face_job("s", 2))
    taken = await pair.worker.take("face", 8, 0.0)
    assert [j.seq for j in taken] == [2]
    (drop,) = await _drain(pair.ingest, "s", 1)
    assert isinstance(drop, Dropped) and drop.job.seq == 1
    assert drop.reason is DropReason.deadline
    assert dropped("deadline") - before == 1


async def test_a_busy_session_cannot_crowd_out_the_others(pair: Pair) -> None:
    """At most ``max_in_flight`` queued jobs per session, so every session gets a turn."""
    for s in ("busy", "quiet"):
        await pair.ingest.open_session(s)
    for seq in range(10):
        await pair.ingest.submit(face_job("busy", seq))
    await pair.ingest.submit(face_job("quiet", 1))
    taken = await pair.worker.take("face", 8, 0.0)
    sessions = [j.session for j in taken]
    assert sessions.count("quiet") == 1
    assert sessions.count("busy") == CONFIG.max_in_flight


async def test_take_waits_for_the_first_job_then_at_most_max_wait(pair: Pair) -> None:
    await pair.ingest.open_session("s")

    async def later() -> None:
        await asyncio.sleep(0.05)
        await pair.ingest.submit(face_job("s", 7))

    task = asyncio.create_task(later())
    jobs: list[Job] = []
    for _ in range(20):  # Redis: an idle take may return [] at each claim check
        jobs = await pair.worker.take("face", 8, 0.01)  # returns with 1 job, not waiting for 8
        if jobs:
            break
    await task
    assert [j.seq for j in jobs] == [7]


async def test_publishing_to_an_ended_session_is_ignored(pair: Pair) -> None:
    await pair.ingest.open_session("s")
    await pair.ingest.submit(face_job("s", 1))
    (job,) = await pair.worker.take("face", 8, 0.0)
    await pair.ingest.close_session("s")
    await pair.worker.publish([_scored(job)])  # no error, nobody to tell
    assert await pair.worker.depth("face") == 0


async def test_memory_batches_round_robin_across_sessions() -> None:
    """The embedded broker also interleaves sessions within one batch.

    (The Redis broker hands out entries in arrival order; its fairness is the per-session
    cap tested above.)
    """
    broker = MemoryBroker(CONFIG)
    for s in ("a", "b", "c"):
        await broker.open_session(s)
        await broker.submit(face_job(s, 1))
        await broker.submit(face_job(s, 2))
    first = await broker.take("face", 3, 0.0)
    assert sorted(j.session for j in first) == ["a", "b", "c"]
    second = await broker.take("face", 3, 0.0)
    assert sorted(j.session for j in second) == ["a", "b", "c"]
    assert {j.seq for j in second} == {2}


HOUR = 3600.0  # a max_wait no test waits out: a take that returns did not wait for it


async def _take_without_waiting(broker: MemoryBroker, modality: Modality) -> list[Job]:
    """``take(modality, 8, HOUR)``, which must finish within a few turns of the event loop:
    on nothing but what is already queued, never on a timer. Counted in loop turns, not
    seconds, so a slow machine cannot fail it."""
    task = asyncio.create_task(broker.take(modality, 8, HOUR))
    try:
        assert await _finishes(task), f"take({modality!r}) is waiting for more jobs"
        return task.result()
    finally:
        task.cancel()


async def _finishes(task: asyncio.Task[list[Job]], turns: int = 20) -> bool:
    """Whether ``task`` is done after at most ``turns`` passes of the event loop."""
    for _ in range(turns):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


async def test_memory_take_returns_at_once_when_the_only_session_is_served() -> None:
    """One live session: nothing else can join its batch before its next frame, so no wait."""
    broker = MemoryBroker(CONFIG)
    await broker.open_session("solo")
    await broker.submit(face_job("solo", 1))
    taken = await _take_without_waiting(broker, "face")  # the old rule waited the full max_wait
    assert [j.seq for j in taken] == [1]


async def test_memory_take_waits_for_every_sending_session_then_no_longer() -> None:
    broker = MemoryBroker(CONFIG)
    for s in ("a", "b"):
        await broker.open_session(s)
        await broker.submit(face_job(s, 1))
    await broker.take("face", 8, 0.0)  # both now send faces
    await broker.submit(face_job("a", 2))
    t0 = time.monotonic()
    taken = await broker.take("face", 8, 0.2)  # "b" may still send: wait, bounded
    waited = time.monotonic() - t0
    assert [j.session for j in taken] == ["a"]  # returned without "b": the wait is bounded
    assert waited >= 0.2

    await broker.submit(face_job("a", 3))
    task = asyncio.create_task(broker.take("face", 8, HOUR))
    try:
        assert not await _finishes(task)  # "b" may still send: waiting for it
        await broker.submit(face_job("b", 2))
        assert await _finishes(task)  # ends when "b"'s job arrives, not at max_wait
        assert sorted(j.session for j in task.result()) == ["a", "b"]
    finally:
        task.cancel()


async def test_memory_take_ignores_closed_sessions_and_other_modalities() -> None:
    broker = MemoryBroker(CONFIG)
    for s in ("face-only", "gone", "voice"):
        await broker.open_session(s)
    await broker.submit(face_job("face-only", 1))
    await broker.submit(face_job("gone", 1))
    await broker.take("face", 8, 0.0)
    await broker.close_session("gone")
    await broker.submit(voice_job("voice", 1))
    await broker.submit(face_job("face-only", 2))
    # neither take waits: "gone" is closed, and "voice" sends no faces ("face-only" no voice)
    assert [j.session for j in await _take_without_waiting(broker, "face")] == ["face-only"]
    assert [j.session for j in await _take_without_waiting(broker, "voice")] == ["voice"]


# -- the batching worker ------------------------------------------------------------------


def _downscaled(image: np.ndarray, max_side: int = 320) -> tuple[np.ndarray, float]:
    s = min(1.0, max_side / max(image.shape[:2]))
    small = cv2.resize(
        image, (round(image.shape[1] * s), round(image.shape[0] * s)), interpolation=cv2.INTER_AREA
    )
    return small, s


async def test_worker_serves_two_sessions_their_own_faces(
    pair: Pair, analyzer: FaceAnalyzer, media: Path
) -> None:
    worker = BatchWorker(pair.worker, analyzer, WorkerConfig(max_batch=8, max_wait_ms=2))
    worker.start()
    try:
        two = read_image(media / "two_people.jpg")
        one = read_image(media / "justin.jpg")
        for name, image in (("two", two), ("one", one)):
            await pair.ingest.open_session(name)
            frame, scale = _downscaled(image)
            await pair.ingest.submit(face_job(name, 1, frame, scale=scale))
        (r_two,) = await asyncio.wait_for(_drain(pair.ingest, "two", 1), 60)
        (r_one,) = await asyncio.wait_for(_drain(pair.ingest, "one", 1), 60)
    finally:
        await worker.stop()
    assert isinstance(r_two, Scored) and isinstance(r_one, Scored)
    assert (len(r_two.result.boxes), len(r_one.result.boxes)) == (2, 1)
    assert r_one.model == analyzer.model
    x, y, w, h = r_one.result.boxes[0]  # mapped back to source pixels (381x384)
    assert w > 100 and x + w <= one.shape[1] + 2 and y + h <= one.shape[0] + 2
    assert r_one.result.classes[int(r_one.result.scores[0].argmax())] == "happy"


async def test_a_bad_job_fails_alone_and_the_worker_goes_on(
    pair: Pair, analyzer: FaceAnalyzer
) -> None:
    worker = BatchWorker(pair.worker, analyzer, WorkerConfig(max_batch=8, max_wait_ms=2))
    worker.start()
    bad_frames = [np.zeros((0, 0, 3), np.uint8), np.zeros((10, 10), np.float32)]
    try:
        await pair.ingest.open_session("bad")
        await pair.ingest.open_session("good")
        for seq, frame in enumerate(bad_frames, 1):  # Redis: they fail already on the wire
            await pair.ingest.submit(Job("bad", seq, 0.0, frame, FrameInfo(10, 10)))
        await pair.ingest.submit(face_job("good", 1, np.full((120, 160, 3), 90, np.uint8)))
        bad = await asyncio.wait_for(_drain(pair.ingest, "bad", 2), 60)
        (good,) = await asyncio.wait_for(_drain(pair.ingest, "good", 1), 60)
    finally:
        await worker.stop()
    assert all(isinstance(r, Failed) and r.error for r in bad)
    assert isinstance(good, Scored) and good.result.boxes == []


def test_one_batch_is_one_classifier_call_off_the_event_loop_thread(
    analyzer: FaceAnalyzer, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, str]] = []
    real = analyzer.classify

    def spy(frames, boxes):  # type: ignore[no-untyped-def]
        calls.append((len(frames), threading.current_thread().name))
        return real(frames, boxes)

    monkeypatch.setattr(analyzer, "classify", spy)
    frame, scale = _downscaled(read_image(media / "two_people.jpg"))
    jobs = [face_job(f"s{i}", 1, frame, scale=scale) for i in range(3)]

    async def main() -> list[object]:
        w = BatchWorker(MemoryBroker(), analyzer)
        loop = asyncio.get_running_loop()
        try:
            return list(await loop.run_in_executor(w._executor, run_batch, analyzer, jobs))
        finally:
            await w.stop()

    results = asyncio.run(main())
    assert [len(r.result.boxes) for r in results if isinstance(r, Scored)] == [2, 2, 2]
    assert calls == [(3, calls[0][1])] and calls[0][1].startswith("face-infer")


def test_session_results_keep_track_ids_and_count_drops() -> None:
    from emostream.stream.session_view import SessionView

    view = SessionView("s")
    classes = ("happy", "sad")
    scores = np.array([[0.9, 0.1]], np.float32)
    info = FrameInfo(640, 480, 0.5)
    now = time.monotonic()

    def scored(seq: int, pts: float, boxes: list[tuple[int, int, int, int]]) -> Scored[FaceScores]:
        job = Job("s", seq, pts, np.empty(0, np.uint8), info, created=now)
        return Scored(job, "m/1", FaceScores(boxes, scores[: len(boxes)], classes))

    m1 = view.message(scored(1, 0.0, [(10, 10, 50, 50)]))
    m2 = view.message(scored(2, 0.067, [(14, 12, 50, 50)]))
    late = Job("s", 3, 0.133, np.empty(0, np.uint8), info, created=now)
    gone = view.message(Dropped(late, DropReason.deadline))
    assert m1 is not None and m2 is not None and gone is None
    assert m1.type == "face" and m2.type == "face"
    assert m1.faces[0].track_id == m2.faces[0].track_id
    assert m2.faces[0].label == "happy" and (m2.width, m2.height) == (640, 480)
    assert m2.latency_ms >= 0 and view.dropped == {"deadline": 1}
    empty = view.message(scored(4, 0.2, []))
    assert empty is not None and empty.type == "face" and empty.faces == []
    notice = view.message(BrokerNotice("Redis at x unreachable"))
    assert notice is not None and notice.type == "error" and notice.code == "broker_unavailable"
