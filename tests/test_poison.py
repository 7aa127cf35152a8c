"""Issue 12, defects 1-4 and 11 (scale): one poisoned entry never stops a fleet.

Every reproduction is a real entry put with ``XADD`` on a real redis-server: on the job
stream a real ``emostream worker`` (and an in-process one) acks it on the stream it came
from, counts it and goes on serving a real session; on a results stream the ingest node's
reader skips it and keeps routing. A job that makes the analyzer raise fails alone, not
its batch. A background task that dies is restarted, counted and shown by ``/readyz``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from emostream import metrics
from emostream.bench.procs import Worker
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.memory import MemoryBroker
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.redis_worker import RedisWorker
from emostream.broker.wire import (
    WireError,
    decode_frame,
    decode_outcome,
    encode_job,
    encode_outcome,
    job_header,
)
from emostream.models.batching import BatchWorker, WorkerConfig
from emostream.models.face import FaceAnalyzer
from emostream.models.repository import ModelRepository
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.outcomes import FaceScores, Failed, Scored, SessionEvent
from emostream.settings import Settings
from emostream.stream.app import AppState, create_app
from emostream.stream.media import read_image
from emostream.stream.session_manager import SessionManager
from emostream.supervise import supervise

from brokers import broker_config, dropped, face_job, next_event
from redis_server import RedisServer

STREAM = "emostream:jobs:face"
GROUP = "emostream-workers"
DEEP_META = '{"m":' * 1000 + "{}" + "}" * 1000  # JSON nested 1,000 deep (RecursionError)


def _bomb() -> bytes:
    """A 631-byte 8x8 JPEG whose frame header (SOF0) claims 30000x30000."""
    _, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 100, np.uint8))
    data = buf.tobytes()
    i = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    return data[: i + 5] + (30000).to_bytes(2, "big") * 2 + data[i + 9 :]


def _good_fields(reply_to: str = "") -> dict[bytes, bytes]:
    fields = encode_job(face_job("garbage", 1))
    fields[b"reply_to"] = reply_to.encode()
    return fields


def poisoned_jobs(reply_to: str) -> dict[str, dict[bytes, bytes]]:
    """The issue's reproductions and their neighbours: entries no worker can read."""
    good = _good_fields(reply_to)
    return {
        # the issue's exact command: XADD emostream:jobs:face * v 1 modality face meta {} ...
        "v1_meta_seq_inf": {
            b"v": b"1",
            b"modality": b"face",
            b"meta": b"{}",
            b"session": b"s",
            b"seq": b"inf",
        },
        "v1_deep_meta": {b"v": b"1", b"modality": b"face", b"meta": DEEP_META.encode()},
        "v2_deep_meta": {**good, b"meta": DEEP_META.encode()},
        "seq_inf": {**good, b"seq": b"inf"},
        "seq_nan": {**good, b"seq": b"nan"},
        "seq_huge": {**good, b"seq": b"9" * 400},
        "seq_negative": {**good, b"seq": b"-1"},
        "scale_0": {**good, b"scale": b"0"},
        "scale_nan": {**good, b"scale": b"nan"},
        "width_0": {**good, b"width": b"0"},
        "height_huge": {**good, b"height": b"1e300"},
        "created_inf": {**good, b"created": b"inf"},
        "deadline_nan": {**good, b"deadline": b"nan"},
        "modality_voice": {**good, b"modality": b"voice"},
        "reply_to_a_job_stream": {**good, b"reply_to": STREAM.encode()},
        "not_utf8_session": {**good, b"session": b"\xff\xfe"},
    }


def poisoned_outcomes() -> dict[str, dict[bytes, bytes]]:
    base = encode_outcome(_scored(face_job("x", 1)))
    return {
        "v1_meta_seq_inf": {b"v": b"1", b"modality": b"face", b"meta": b"{}", b"seq": b"inf"},
        "deep_meta": {**base, b"meta": DEEP_META.encode()},
        "seq_inf": {**base, b"seq": b"inf"},
        "scale_nan": {**base, b"scale": b"nan"},
        "width_huge": {**base, b"width": b"1" * 60},
        "pts_inf": {**base, b"pts": b"inf"},
        "scores_nan": {**base, b"scores": np.array([np.nan], "<f4").tobytes()},
        "modality_voice": {**base, b"modality": b"voice"},
        "kind_unknown": {**base, b"kind": b"exploded"},
    }


def _scored(job: Job) -> Scored[FaceScores]:
    scores = np.array([[1.0]], np.float32)
    return Scored(job.header(), "m/1", FaceScores([(1, 2, 3, 4)], scores, ("x",)))


def _restarts(task: str) -> float:
    return metrics.TASK_RESTARTS.labels(task)._value.get()  # type: ignore[attr-defined]


def _wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached (failure guard, not a speed check)")


# -- the edge: every reproduction is a WireError, nothing else ----------------------------


@pytest.mark.parametrize("name", sorted(poisoned_jobs("emostream:results:n")))
def test_each_poisoned_job_header_is_a_wire_error(name: str) -> None:
    fields = poisoned_jobs("emostream:results:n")[name]
    if name == "reply_to_a_job_stream":
        job = job_header(fields, "1-0")  # readable; the worker refuses to reply there
        assert job.reply_to == STREAM
        return
    with pytest.raises(WireError):
        job_header(fields, "1-0")


@pytest.mark.parametrize("name", sorted(poisoned_outcomes()))
def test_each_poisoned_outcome_is_a_wire_error(name: str) -> None:
    with pytest.raises(WireError):
        decode_outcome(poisoned_outcomes()[name])


def test_random_mutations_of_entries_raise_only_wire_errors() -> None:
    """2,000 mutated job and outcome entries (seeded): accepted, or a WireError."""
    rng = random.Random(12)
    values = [b"", b"inf", b"-inf", b"nan", b"1e309", b"-1", b"0", b"2", b"9" * 70, b"\xff"]
    values += [b"1.5", b"face", b"voice", b"jpeg", b"raw", b"8,8,3", b"0,0", DEEP_META.encode()]
    job = _good_fields("emostream:results:n")
    entries = [job, encode_outcome(_scored(face_job("x", 1)))]
    verdicts = {"read": 0, "refused": 0}
    for _ in range(2000):
        fields = dict(rng.choice(entries))
        for _ in range(rng.randint(1, 3)):
            key = rng.choice([*fields, b"meta", b"extra"])
            if rng.random() < 0.15:
                fields.pop(key, None)
            else:
                fields[key] = rng.choice([*values, bytes(rng.getrandbits(8) for _ in range(9))])
        for read in (
            lambda f: decode_frame(f, (64, 48)),
            lambda f: job_header(f, "1-0"),
            decode_outcome,
        ):
            try:
                read(fields)
                verdicts["read"] += 1
            except WireError:  # anything else fails the test
                verdicts["refused"] += 1
    assert verdicts["read"] > 100 and verdicts["refused"] > 1000, verdicts


def test_a_small_jpeg_claiming_30000x30000_is_refused_before_any_allocation() -> None:
    bomb = _bomb()
    assert len(bomb) < 700
    fields = {b"codec": b"jpeg", b"data": bomb}
    tracemalloc.start()
    try:
        with pytest.raises(WireError, match="30000x30000 refused"):
            decode_frame(fields, None)
        with pytest.raises(WireError, match="30000x30000 refused"):
            decode_frame(fields, (30000, 30000))
        _, bomb_peak = tracemalloc.get_traced_memory()
        # the control: tracemalloc does see what cv2.imdecode allocates (a 2000x2000 frame)
        tracemalloc.reset_peak()
        big = cv2.imencode(".jpg", np.zeros((2000, 2000, 3), np.uint8))[1].tobytes()
        decode_frame({b"codec": b"jpeg", b"data": big}, (2000, 2000))
        _, control_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert control_peak > 11_000_000  # 2000*2000*3 bytes were seen
    assert bomb_peak < 1_000_000  # nothing of the 2.7 GB the header asks for


def test_a_payload_that_disagrees_with_its_job_is_refused() -> None:
    fields = encode_job(face_job("s", 1, np.full((48, 64, 3), 9, np.uint8)))
    header = job_header(fields, "1-0")
    assert decode_frame(fields, (64, 48)).shape == (48, 64, 3)
    assert decode_frame(fields, (66, 46)).shape == (48, 64, 3)  # rounding slack
    with pytest.raises(WireError, match="its job says 640x480"):
        decode_frame(fields, (640, 480))
    assert header.info == FrameInfo(64, 48)


def test_frame_info_refuses_a_scale_of_zero_or_nan() -> None:
    for scale in (0.0, math.nan, -1.0, 1.5, math.inf):
        with pytest.raises(ValueError, match="scale"):
            FrameInfo(64, 48, scale)
    with pytest.raises(ValueError, match="size"):
        FrameInfo(0, 48)


# -- the job stream: a real worker survives every reproduction ----------------------------


@pytest.mark.slow
def test_a_real_worker_process_acks_counts_and_survives_every_poisoned_entry(
    redis_server: RedisServer, repo: ModelRepository, media: Path, output_dir: Path
) -> None:
    worker = Worker(
        redis_server.url,
        output_dir,
        "poisoned",
        EMOSTREAM_BROKER__CLAIM_IDLE_MS="200",
        EMOSTREAM_BROKER__CLAIM_INTERVAL_MS="100",
    )
    r = redis.Redis.from_url(redis_server.url)
    try:
        _wait(lambda: r.exists(STREAM) and r.xinfo_consumers(STREAM, GROUP))
        malformed = poisoned_jobs("emostream:results:nobody")
        for fields in malformed.values():
            r.xadd(STREAM, fields)  # type: ignore[arg-type]
        bomb = {**_good_fields("emostream:results:nobody"), b"data": _bomb()}
        bomb.update({b"width": b"30000", b"height": b"30000"})
        r.xadd(STREAM, bomb)  # type: ignore[arg-type]  # readable header: Failed, not run
        _wait(lambda: worker.counter("emostream_frames_dropped_total", reason="error") == 1)
        _wait(
            lambda: (
                worker.counter("emostream_frames_dropped_total", reason="malformed")
                == len(malformed)
            )
        )
        assert r.xpending(STREAM, GROUP)["pending"] == 0
        voice = "emostream:jobs:voice"  # exists when the worker serves voice too
        # nothing was acked or put there: every face entry was dealt with on its own stream
        assert not r.exists(voice) or (
            r.xlen(voice) == 0 and not r.xpending(voice, GROUP)["pending"]
        )
        assert worker.proc.poll() is None, worker.log()

        async def one_result() -> SessionEvent:
            ingest = RedisIngest(BrokerConfig(url=redis_server.url, deadline_ms=30_000))
            try:
                await ingest.open_session("s")
                await ingest.submit(face_job("s", 1, read_image(media / "justin.jpg")))
                return await next_event(ingest, "s")
            finally:
                await ingest.close()

        result = asyncio.run(one_result())
        assert isinstance(result, Scored) and len(result.result.boxes) == 1, result
        time.sleep(1.0)  # > claim_idle_ms + claim_interval_ms: nothing comes back to re-run
        assert worker.counter("emostream_frames_dropped_total", reason="malformed") == len(
            malformed
        )
        assert worker.counter("emostream_jobs_reclaimed_total") == 0
        assert worker.counter("emostream_task_restarts_total") == 0
        assert r.xpending(STREAM, GROUP)["pending"] == 0
    finally:
        r.close()
        code = worker.stop()
    assert code == 0, worker.log()
    assert "malformed job" in worker.log()


async def test_voice_on_the_face_stream_is_acked_once_there_and_never_rerun(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    worker = RedisWorker(broker_config(redis_server.url), consumer="w")
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await worker.take("face", 8, 0.0)  # joins the group
        fields = {**_good_fields(ingest.results_key), b"modality": b"voice"}
        await r.xadd(STREAM, fields)  # type: ignore[arg-type]
        before = dropped("malformed")
        voice_before = metrics.FRAMES_DROPPED.labels("voice", "malformed")._value.get()  # type: ignore[attr-defined]
        for _ in range(6):  # well past claim_idle_ms (200): a pending entry would come back
            assert await worker.take("face", 8, 0.0) == []
            await asyncio.sleep(0.1)
        assert dropped("malformed") - before == 1  # counted once, on the face stream
        assert metrics.FRAMES_DROPPED.labels("voice", "malformed")._value.get() == voice_before  # type: ignore[attr-defined]
        assert (await r.xpending(STREAM, GROUP))["pending"] == 0
        assert not await r.exists("emostream:jobs:voice")
    finally:
        await r.aclose()
        await worker.close()


async def test_a_job_that_every_worker_died_on_is_acked_as_malformed_not_rerun(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    """A readable job that still kills its workers (a crash no check catches, simulated
    by workers that read it and vanish): after ``max_deliveries`` it is not run again."""
    r = aioredis.Redis.from_url(redis_server.url)
    survivor = RedisWorker(broker_config(redis_server.url), consumer="survivor")
    try:
        await ingest.open_session("s")
        await ingest.submit(face_job("s", 1))
        dead = RedisWorker(broker_config(redis_server.url), consumer="dead")
        assert [j.seq for j in await dead.take("face", 8, 0.0)] == [1]  # delivery 1
        await dead.close()
        ((entry, _),) = await r.xrange(STREAM)
        for _ in range(3):  # deliveries 2-4: three more workers read it and died
            await r.xclaim(STREAM, GROUP, "dead", 0, [entry])
        await asyncio.sleep(0.3)  # idle > claim_idle_ms (200)
        before = dropped("malformed")
        # the 5th delivery (max_deliveries): still run
        assert [j.seq for j in await survivor.take("face", 8, 0.0)] == [1]
        ((_, pending),) = [
            (p["message_id"], p["times_delivered"])
            for p in await r.xpending_range(STREAM, GROUP, "-", "+", 10)
        ]
        assert pending == 5 and dropped("malformed") == before
        await asyncio.sleep(0.3)  # the survivor "died" on it too: the 6th is refused
        for _ in range(20):
            assert await survivor.take("face", 8, 0.0) == []
            if dropped("malformed") - before == 1:
                break
        assert dropped("malformed") - before == 1
        assert (await r.xpending(STREAM, GROUP))["pending"] == 0
    finally:
        await survivor.close()
        await r.aclose()


async def test_an_in_process_worker_survives_every_poisoned_entry_and_serves_a_session(
    redis_server: RedisServer, ingest: RedisIngest, analyzer: FaceAnalyzer, media: Path
) -> None:
    broker = RedisWorker(broker_config(redis_server.url), consumer="w")
    worker = BatchWorker(broker, analyzer, WorkerConfig(max_batch=8, max_wait_ms=2))
    r = aioredis.Redis.from_url(redis_server.url)
    restarts = _restarts("face-worker")
    try:
        await broker.take("face", 1, 0.0)  # joins the group before anything is added
        worker.start()
        await ingest.open_session("poison")
        malformed = poisoned_jobs(ingest.results_key)
        before, errors = dropped("malformed"), dropped("error")
        for fields in malformed.values():
            await r.xadd(STREAM, fields)  # type: ignore[arg-type]
        await ingest.open_session("good")
        await ingest.submit(face_job("good", 1, read_image(media / "justin.jpg")))
        good = await next_event(ingest, "good")
        assert isinstance(good, Scored) and len(good.result.boxes) == 1
        for _ in range(100):
            if dropped("malformed") - before == len(malformed):
                break
            await asyncio.sleep(0.1)
        assert dropped("malformed") - before == len(malformed)
        assert dropped("error") == errors
        assert (await r.xpending(STREAM, GROUP))["pending"] == 0
        assert worker.tasks[0].running and _restarts("face-worker") == restarts
    finally:
        await worker.stop()
        await broker.close()
        await r.aclose()


async def test_a_30000x30000_jpeg_job_fails_alone_without_a_big_allocation(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    worker = RedisWorker(broker_config(redis_server.url), consumer="w")
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await worker.take("face", 1, 0.0)
        await ingest.open_session("s")
        await ingest.submit(face_job("s", 1))  # a real job: its header is readable
        ((entry, fields),) = await r.xrange(STREAM)
        await r.xdel(STREAM, entry)
        fields.update({b"data": _bomb(), b"width": b"30000", b"height": b"30000"})
        await r.xadd(STREAM, fields)
        tracemalloc.start()
        try:
            assert await worker.take("face", 8, 0.0) == []
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 20_000_000  # the frame it claims would be 2.7 GB
        assert (await r.xpending(STREAM, GROUP))["pending"] == 0
        ((_, out),) = await r.xrange(ingest.results_key)
        failed = decode_outcome(out)
        assert isinstance(failed, Failed) and "30000x30000 refused" in failed.error
    finally:
        await r.aclose()
        await worker.close()


# -- the results stream: the ingest node's reader goes on ----------------------------------


async def test_poisoned_outcomes_are_skipped_and_counted_and_routing_goes_on(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    worker = RedisWorker(broker_config(redis_server.url), consumer="w")
    r = aioredis.Redis.from_url(redis_server.url)
    restarts = _restarts("redis-results")
    try:
        await ingest.open_session("s")
        await ingest.submit(face_job("s", 1))
        (job,) = await worker.take("face", 8, 0.0)
        await worker.publish([_scored(job)])
        first = await next_event(ingest, "s")  # the reader is running and reading
        assert isinstance(first, Scored)
        before = metrics.RESULTS_MALFORMED._value.get()  # type: ignore[attr-defined]
        bad = poisoned_outcomes()
        for fields in bad.values():
            await r.xadd(ingest.results_key, fields)  # type: ignore[arg-type]
        await ingest.submit(face_job("s", 2))
        (job2,) = await worker.take("face", 8, 0.0)
        await worker.publish([_scored(job2)])
        second = await next_event(ingest, "s")
        assert isinstance(second, Scored) and second.job.seq == 2
        assert metrics.RESULTS_MALFORMED._value.get() - before == len(bad)  # type: ignore[attr-defined]
        (reader,) = ingest.tasks
        assert reader.running and _restarts("redis-results") == restarts
        assert await ingest.healthy()
    finally:
        await r.aclose()
        await worker.close()


async def test_a_results_reader_that_dies_is_restarted_and_goes_on(
    redis_server: RedisServer, ingest: RedisIngest, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = RedisWorker(broker_config(redis_server.url), consumer="w")
    real = ingest._route
    calls = 0

    def route_with_a_bug(fields: dict[bytes, bytes]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in routing")
        real(fields)

    monkeypatch.setattr(ingest, "_route", route_with_a_bug)
    restarts = _restarts("redis-results")
    try:
        await ingest.open_session("s")
        for seq in (1, 2):
            await ingest.submit(face_job("s", seq))
            jobs = await worker.take("face", 8, 0.0)
            await worker.publish([_scored(j) for j in jobs])
        got = await next_event(ingest, "s")  # outcome 1 died with the reader; 2 arrives
        assert isinstance(got, Scored) and got.job.seq == 2
        (reader,) = ingest.tasks
        assert reader.restarts == 1 and reader.last_error == "RuntimeError: a bug in routing"
        assert _restarts("redis-results") - restarts == 1
    finally:
        await worker.close()


# -- a job that fails fails alone ---------------------------------------------------------


def _bypassed(info: FrameInfo, scale: float) -> FrameInfo:
    """Frame info past its own check: what a bug elsewhere could still hand an analyzer."""
    object.__setattr__(info, "scale", scale)
    return info


def test_a_batch_with_bad_jobs_scores_the_good_ones(analyzer: FaceAnalyzer, media: Path) -> None:
    face = read_image(media / "justin.jpg")
    h, w = face.shape[:2]
    gray = np.full((64, 64, 3), 90, np.uint8)
    jobs = [
        Job("a", 1, None, face, FrameInfo(w, h)),
        Job("nan", 1, None, gray, _bypassed(FrameInfo(64, 64, detect=False), math.nan)),
        Job("b", 1, None, face, FrameInfo(w, h)),
        Job("zero", 1, None, gray, _bypassed(FrameInfo(64, 64, detect=False), 0.0)),
        Job("2ch", 1, None, np.zeros((64, 64, 2), np.uint8), FrameInfo(64, 64, detect=False)),
        Job("c", 1, None, gray, FrameInfo(64, 64, detect=False)),
    ]
    with pytest.raises(Exception):  # noqa: B017 - the batch as one call does raise
        analyzer.run(jobs)
    errors = dropped("error")
    out = run_batch(analyzer, jobs)
    kinds = {o.job.session: type(o).__name__ for o in out}
    assert kinds == {
        "a": "Scored",
        "nan": "Failed",
        "b": "Scored",
        "zero": "Failed",
        "2ch": "Failed",
        "c": "Scored",
    }
    assert [len(o.result.boxes) for o in out if isinstance(o, Scored)] == [1, 1, 1]
    assert dropped("error") - errors == 3


# -- supervision ----------------------------------------------------------------------------


async def test_a_supervised_task_that_raises_is_restarted_counted_and_reported() -> None:
    runs = 0
    forever = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ValueError(f"boom {runs}")
        await forever.wait()

    before = _restarts("test-flaky")
    handle = supervise("test-flaky", flaky)
    try:
        for _ in range(100):
            if handle.running and runs == 3:
                break
            await asyncio.sleep(0.05)
        assert handle.running and handle.restarts == 2 and runs == 3
        assert handle.last_error == "ValueError: boom 2"
        assert _restarts("test-flaky") - before == 2
        assert handle.problem is None  # back up, and 2 < 3 restarts a minute
    finally:
        await handle.stop()
    assert handle.task.cancelled() and not handle.running


async def test_a_crash_looping_task_is_a_problem() -> None:
    async def broken() -> None:
        raise OSError("always")

    handle = supervise("test-broken", broken)
    try:
        for _ in range(100):
            if handle.restarts >= 3:
                break
            await asyncio.sleep(0.05)
        assert handle.restarts >= 3
        assert handle.problem is not None and "OSError: always" in handle.problem
    finally:
        await handle.stop()


@pytest.fixture()
def readyz_client(
    analyzer: FaceAnalyzer, repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, list[bool], float]]:
    """The app with the in-process broker, whose session reaper raises on its first two
    runs, then reaps until the test sets ``broken[0]``, and from then on dies at once.
    No WebRTC offer is ever made."""
    calls, broken = [0], [False]

    async def reap(self: SessionManager) -> None:
        calls[0] += 1
        if calls[0] <= 2:
            raise KeyError("a reaper bug")
        while not broken[0]:
            await asyncio.sleep(0.02)
        raise KeyError("a reaper bug, again")

    monkeypatch.setattr(SessionManager, "_reap", reap)
    state = AppState(Settings(model_root=repo.root))
    state.face = analyzer
    counted = _restarts("reaper")
    with TestClient(create_app(state=state), raise_server_exceptions=False) as client:
        yield client, broken, counted


def _readyz_when(client: TestClient, predicate: Any) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {}
    for _ in range(200):
        response = client.get("/readyz")
        body = response.json()
        if predicate(body):
            return response.status_code, body
        time.sleep(0.05)
    raise AssertionError(f"/readyz never got there: {body}")


def test_readyz_shows_restarted_tasks_and_fails_while_one_is_down_or_crash_looping(
    readyz_client: tuple[TestClient, list[bool], float],
) -> None:
    client, broken, before = readyz_client
    status, body = _readyz_when(
        client, lambda b: b.get("tasks", {}).get("reaper", {}).get("running")
    )
    assert (status, body["ready"]) == (200, True)
    reaper = body["tasks"]["reaper"]
    assert reaper["restarts"] == 2 and reaper["last_error"] == "KeyError: 'a reaper bug'"
    assert body["tasks"]["face-worker"] == {"running": True, "restarts": 0, "last_error": None}
    broken[0] = True  # it dies again: the third restart within a minute
    status, body = _readyz_when(client, lambda b: b["ready"] is False)
    assert status == 503
    assert "task reaper is" in body["reason"] and "a reaper bug, again" in body["reason"]
    assert body["tasks"]["reaper"]["restarts"] >= 3
    assert _restarts("reaper") - before >= 3


class _FlakyBroker(MemoryBroker):
    """The in-process broker, whose ``take`` has a bug the first time it is called."""

    failures = 1

    async def take(self, modality: Any, max_items: int, max_wait_s: float) -> list[Job]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a take bug")
        return await super().take(modality, max_items, max_wait_s)


async def test_a_worker_loop_that_dies_is_restarted_and_serves_the_next_job(
    analyzer: FaceAnalyzer,
) -> None:
    broker = _FlakyBroker()
    worker = BatchWorker(broker, analyzer, WorkerConfig(max_batch=4, max_wait_ms=1))
    before = _restarts("face-worker")
    worker.start()
    try:
        await broker.open_session("s")
        await broker.submit(face_job("s", 1))

        async def first() -> SessionEvent:
            async for event in broker.results("s"):
                return event
            raise AssertionError("result stream ended")

        result = await asyncio.wait_for(first(), 60)
        assert isinstance(result, Scored) and result.job.seq == 1
        (loop,) = worker.tasks
        assert loop.restarts == 1 and loop.last_error == "RuntimeError: a take bug"
        assert _restarts("face-worker") - before == 1
    finally:
        await worker.stop()
    assert worker.task is not None and worker.task.done()
