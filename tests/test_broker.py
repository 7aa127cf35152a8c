"""The Broker contract (backpressure, deadlines, fairness, routing) and the face worker.

The ``broker`` fixture is parametrized by implementation so that the Redis broker (a later
issue) runs the same tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from emostream import metrics
from emostream.broker.base import Broker, DropReason, Job, Result
from emostream.broker.config import BrokerConfig
from emostream.broker.memory import MemoryBroker, UnknownSessionError
from emostream.broker.redis import RedisBroker
from emostream.models.service import FaceService
from emostream.models.worker import FaceWorker, WorkerConfig
from emostream.stream.media import read_image

from redis_server import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """Each implementation; the Redis one against its own real redis-server."""
    server: RedisServer | None = None
    b: Broker
    if request.param == "memory":
        b = MemoryBroker(max_in_flight=2, deadline_s=30.0)
    else:
        server = RedisServer(tmp_path / "redis").start()
        b = RedisBroker(BrokerConfig(url=server.url, max_in_flight=2, deadline_ms=30_000))
    await b.start()
    yield b
    await b.close()
    if server is not None:
        server.stop()


def _job(session: str, seq: int, frame: np.ndarray | None = None, **kw: object) -> Job:
    payload = frame if frame is not None else np.zeros((8, 8, 3), np.uint8)
    return Job(session=session, modality="face", seq=seq, pts=seq / 15, payload=payload, **kw)  # type: ignore[arg-type]


async def _drain(b: Broker, session: str, n: int) -> list[Result]:
    out: list[Result] = []
    async for r in b.results(session):
        out.append(r)
        if len(out) == n:
            break
    return out


def _dropped(reason: str) -> float:
    return metrics.FRAMES_DROPPED.labels("face", reason)._value.get()  # type: ignore[attr-defined]


async def test_round_trip_routes_results_to_their_session(broker: Broker) -> None:
    await broker.open_session("a")
    await broker.open_session("b")
    await broker.submit(_job("a", 1))
    await broker.submit(_job("b", 1))
    jobs = await broker.take("face", 8, 0.0)
    assert sorted(j.session for j in jobs) == ["a", "b"]
    await broker.publish([Result.of(j, model="m/1") for j in jobs])
    (ra,) = await _drain(broker, "a", 1)
    (rb,) = await _drain(broker, "b", 1)
    assert (ra.session, rb.session) == ("a", "b")


async def test_newest_frame_wins_and_superseded_frames_are_counted(broker: Broker) -> None:
    await broker.open_session("s")
    before = _dropped("superseded")
    for seq in range(5):
        await broker.submit(_job("s", seq))
    assert await broker.depth("face") == 2
    taken = await broker.take("face", 8, 0.0)
    assert [j.seq for j in taken] == [3, 4]
    drops = await _drain(broker, "s", 3)
    assert [(d.seq, d.dropped) for d in drops] == [(i, DropReason.superseded) for i in range(3)]
    assert _dropped("superseded") - before == 3


async def test_jobs_past_their_deadline_are_dropped_not_taken(broker: Broker) -> None:
    await broker.open_session("s")
    before = _dropped("deadline")
    await broker.submit(_job("s", 1, deadline=time.monotonic() - 1))
    await broker.submit(_job("s", 2))
    taken = await broker.take("face", 8, 0.0)
    assert [j.seq for j in taken] == [2]
    (drop,) = await _drain(broker, "s", 1)
    assert drop.seq == 1 and drop.dropped is DropReason.deadline
    assert _dropped("deadline") - before == 1


async def test_a_busy_session_cannot_crowd_out_the_others(broker: Broker) -> None:
    """At most ``max_in_flight`` queued jobs per session, so every session gets a turn."""
    for s in ("busy", "quiet"):
        await broker.open_session(s)
    for seq in range(10):
        await broker.submit(_job("busy", seq))
    await broker.submit(_job("quiet", 1))
    taken = await broker.take("face", 8, 0.0)
    sessions = [j.session for j in taken]
    assert sessions.count("quiet") == 1
    assert sessions.count("busy") == broker.max_in_flight


async def test_memory_batches_round_robin_across_sessions() -> None:
    """The embedded broker also interleaves sessions within one batch.

    (The Redis broker hands out entries in arrival order; its fairness is the per-session
    cap tested above.)
    """
    broker = MemoryBroker(max_in_flight=2, deadline_s=30.0)
    for s in ("a", "b", "c"):
        await broker.open_session(s)
        await broker.submit(_job(s, 1))
        await broker.submit(_job(s, 2))
    first = await broker.take("face", 3, 0.0)
    assert sorted(j.session for j in first) == ["a", "b", "c"]
    second = await broker.take("face", 3, 0.0)
    assert sorted(j.session for j in second) == ["a", "b", "c"]
    assert {j.seq for j in second} == {2}


async def test_take_waits_for_the_first_job_then_at_most_max_wait(broker: Broker) -> None:
    await broker.open_session("s")

    async def later() -> None:
        await asyncio.sleep(0.05)
        await broker.submit(_job("s", 7))

    task = asyncio.create_task(later())
    jobs = await broker.take("face", 8, 0.01)  # returns with 1 job, not waiting for 8
    await task
    assert [j.seq for j in jobs] == [7]


async def test_closing_a_session_drops_its_queue_and_ends_its_results(broker: Broker) -> None:
    await broker.open_session("s")
    await broker.submit(_job("s", 1))
    before = _dropped("session_closed")

    async def read_all() -> list[Result]:
        return [r async for r in broker.results("s")]

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0)  # the reader is waiting on the stream
    await broker.close_session("s")
    assert await asyncio.wait_for(reader, 10) == []  # the stream ended, nothing delivered
    assert await broker.depth("face") == 0
    assert _dropped("session_closed") - before == 1
    await broker.publish([Result("s", "face", 1, 0.0, 0.0, {})])  # ignored, no error
    with pytest.raises(UnknownSessionError):
        await broker.submit(_job("s", 2))


async def test_submit_to_an_unknown_session_is_refused(broker: Broker) -> None:
    with pytest.raises(UnknownSessionError):
        await broker.submit(_job("nobody", 1))


# -- the worker ---------------------------------------------------------------------------


def _downscaled(image: np.ndarray, max_side: int = 320) -> tuple[np.ndarray, float]:
    s = min(1.0, max_side / max(image.shape[:2]))
    small = cv2.resize(
        image, (round(image.shape[1] * s), round(image.shape[0] * s)), interpolation=cv2.INTER_AREA
    )
    return small, s


async def test_worker_serves_two_sessions_their_own_faces(
    broker: Broker, service: FaceService, media: Path
) -> None:
    worker = FaceWorker(broker, service, WorkerConfig(max_batch=8, max_wait_ms=2))
    worker.start()
    try:
        two = read_image(media / "two_people.jpg")
        one = read_image(media / "justin.jpg")
        for name, image in (("two", two), ("one", one)):
            await broker.open_session(name)
            frame, scale = _downscaled(image)
            await broker.submit(_job(name, 1, frame, meta={"scale": scale}))
        (r_two,) = await asyncio.wait_for(_drain(broker, "two", 1), 60)
        (r_one,) = await asyncio.wait_for(_drain(broker, "one", 1), 60)
    finally:
        await worker.stop()
    assert (len(r_two.boxes), len(r_one.boxes)) == (2, 1)
    assert r_one.model == "face-emotion/1" and r_one.scores is not None
    x, y, w, h = r_one.boxes[0]  # mapped back to source pixels (381x384)
    assert w > 100 and x + w <= one.shape[1] + 2 and y + h <= one.shape[0] + 2
    assert r_one.classes[int(r_one.scores[0].argmax())] == "happy"


async def test_a_bad_job_fails_alone_and_the_worker_goes_on(
    broker: Broker, service: FaceService
) -> None:
    worker = FaceWorker(broker, service, WorkerConfig(max_batch=8, max_wait_ms=2))
    worker.start()
    try:
        await broker.open_session("bad")
        await broker.open_session("good")
        await broker.submit(_job("bad", 1, np.zeros((0, 0, 3), np.uint8)))
        await broker.submit(_job("bad", 2, np.zeros((10, 10), np.float32)))
        await broker.submit(_job("good", 1, np.full((120, 160, 3), 90, np.uint8)))
        bad = await asyncio.wait_for(_drain(broker, "bad", 2), 60)
        (good,) = await asyncio.wait_for(_drain(broker, "good", 1), 60)
    finally:
        await worker.stop()
    assert [r.dropped for r in bad] == [DropReason.error, DropReason.error]
    assert all(r.error for r in bad)
    assert good.dropped is None and good.boxes == []


def test_one_batch_is_one_classifier_call_off_the_event_loop_thread(
    service: FaceService, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, str]] = []
    real = service.analyzer.classify

    def spy(frames, boxes):  # type: ignore[no-untyped-def]
        calls.append((len(frames), threading.current_thread().name))
        return real(frames, boxes)

    monkeypatch.setattr(service.analyzer, "classify", spy)
    frame, scale = _downscaled(read_image(media / "two_people.jpg"))
    jobs = [
        _job(f"s{i}", 1, frame, deadline=time.monotonic() + 60, meta={"scale": scale})
        for i in range(3)
    ]

    async def main() -> list[Result]:
        b = MemoryBroker()
        w = FaceWorker(b, service)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(w._executor, w.infer, jobs)
        finally:
            await w.stop()

    results = asyncio.run(main())
    assert [len(r.boxes) for r in results] == [2, 2, 2]
    assert calls == [(3, calls[0][1])] and calls[0][1].startswith("face-infer")


def test_session_results_keep_track_ids_and_count_drops() -> None:
    from emostream.stream.results import FaceResults

    view = FaceResults("s")
    classes = ["happy", "sad"]
    scores = np.array([[0.9, 0.1]], np.float32)
    meta = {"width": 640.0, "height": 480.0, "scale": 0.5}
    now = time.monotonic()
    m1 = view.message(
        Result("s", "face", 1, 0.0, now, meta, "m/1", [(10, 10, 50, 50)], scores, classes)
    )
    m2 = view.message(
        Result("s", "face", 2, 0.067, now, meta, "m/1", [(14, 12, 50, 50)], scores, classes)
    )
    gone = view.message(Result("s", "face", 3, 0.133, now, meta, dropped=DropReason.deadline))
    assert m1 is not None and m2 is not None and gone is None
    assert m1.faces[0].track_id == m2.faces[0].track_id
    assert m2.faces[0].label == "happy" and (m2.width, m2.height) == (640, 480)
    assert m2.latency_ms >= 0 and view.dropped == {"deadline": 1}
    empty = view.message(Result("s", "face", 4, 0.2, now, meta, "m/1", [], None, classes))
    assert empty is not None and empty.faces == []
