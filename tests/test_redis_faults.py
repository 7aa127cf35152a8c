"""The Redis broker's fault handling, against a real redis-server (no WebRTC needed).

A dead worker's jobs are claimed by another or dropped as stale; Redis going away is
reported to sessions and ``problem``/``healthy`` and never raises into a session; when it
comes back (empty) results resume; entries no worker can read are acked and counted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from emostream import metrics
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.redis_worker import RedisWorker
from emostream.broker.wire import decode_outcome, encode_job
from emostream.pipeline.jobs import DropReason, Job
from emostream.pipeline.outcomes import (
    BrokerNotice,
    Dropped,
    FaceScores,
    Failed,
    Scored,
)

from brokers import broker_config, dropped, face_job, next_event
from redis_server import RedisServer


def _worker(url: str, consumer: str) -> RedisWorker:
    return RedisWorker(broker_config(url), consumer=consumer)


def _scored(job: Job) -> Scored[FaceScores]:
    return Scored(job.header(), "m/1", FaceScores([], np.zeros((0, 1), np.float32), ("x",)))


async def test_jobs_of_a_dead_worker_are_claimed_by_another(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    await ingest.open_session("s")
    await ingest.submit(face_job("s", 1))
    dead = _worker(redis_server.url, "dead")
    taken = await dead.take("face", 8, 0.0)
    assert [j.seq for j in taken] == [1]  # read, never answered: the worker "died" here
    survivor = _worker(redis_server.url, "survivor")
    before = metrics.JOBS_RECLAIMED.labels("face")._value.get()  # type: ignore[attr-defined]
    try:
        claimed: list[Job] = []
        for _ in range(50):  # claim_idle_ms=200; each take blocks up to 1 s when idle
            claimed = await survivor.take("face", 8, 0.0)
            if claimed:
                break
        assert [j.seq for j in claimed] == [1]
        await survivor.publish([_scored(j) for j in claimed])
        r = await next_event(ingest, "s")
        assert isinstance(r, Scored) and (r.job.seq, r.model) == (1, "m/1")
        assert metrics.JOBS_RECLAIMED.labels("face")._value.get() - before == 1  # type: ignore[attr-defined]
        redis = aioredis.Redis.from_url(redis_server.url)
        pending = await redis.xpending("emostream:jobs:face", "emostream-workers")
        await redis.aclose()
        assert pending["pending"] == 0  # acked by the survivor
    finally:
        await survivor.close()
        await dead.close()


async def test_a_dead_workers_stale_jobs_are_dropped_not_run(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    await ingest.open_session("s")
    await ingest.submit(face_job("s", 1, deadline_s=0.1))
    dead = _worker(redis_server.url, "dead")
    assert len(await dead.take("face", 8, 0.0)) == 1
    survivor = _worker(redis_server.url, "survivor")
    before = dropped("deadline")
    try:

        async def work() -> None:
            while True:
                assert await survivor.take("face", 8, 0.0) == []  # nothing runnable

        task = asyncio.create_task(work())
        r = await next_event(ingest, "s")  # the survivor claims it, drops it, tells the session
        task.cancel()
        assert isinstance(r, Dropped) and (r.job.seq, r.reason) == (1, DropReason.deadline)
        assert dropped("deadline") - before == 1
    finally:
        await survivor.close()
        await dead.close()


async def test_redis_going_away_is_reported_and_results_resume_after_restart(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    await ingest.open_session("s")
    worker = _worker(redis_server.url, "w")
    try:
        await ingest.submit(face_job("s", 1))
        (job,) = await worker.take("face", 8, 0.0)
        await worker.publish([_scored(job)])
        first = await next_event(ingest, "s")
        assert isinstance(first, Scored) and first.job.seq == 1

        redis_server.stop()
        r = await next_event(ingest, "s")  # the reader notices and tells the session once
        assert isinstance(r, BrokerNotice) and "unreachable" in r.detail
        assert not await ingest.healthy() and ingest.problem is not None
        before = dropped("unavailable")
        await ingest.submit(face_job("s", 2))  # no exception: dropped and counted
        assert dropped("unavailable") - before == 1
        assert await worker.take("face", 8, 0.0) == []  # the worker backs off, no crash

        redis_server.start()  # same port, empty: no stream, no group
        for _ in range(100):
            if await ingest.healthy():
                break
            await asyncio.sleep(0.1)
        assert ingest.problem is None
        await ingest.submit(face_job("s", 3))
        jobs: list[Job] = []
        for _ in range(10):
            jobs = await worker.take("face", 8, 0.0)
            if jobs:
                break
        assert [j.seq for j in jobs] == [3]
        await worker.publish([_scored(j) for j in jobs])
        r = await next_event(ingest, "s")
        while isinstance(r, BrokerNotice):  # a second notice if it raced the restart
            r = await next_event(ingest, "s")
        assert isinstance(r, Scored) and r.job.seq == 3
    finally:
        await worker.close()


async def test_entries_no_worker_can_read_are_acked_and_counted(
    redis_server: RedisServer, ingest: RedisIngest, tmp_path: Path
) -> None:
    await ingest.open_session("s")
    redis = aioredis.Redis.from_url(redis_server.url)
    worker = _worker(redis_server.url, "w")
    stream = "emostream:jobs:face"
    try:
        await worker.take("face", 1, 0.0)  # creates the group
        await redis.xadd(stream, {"garbage": "yes"})  # not a job at all
        good = encode_job(face_job("s", 1))
        good[b"reply_to"] = ingest.results_key.encode()
        bad_payload = {**good, b"seq": b"2", b"data": b"not a jpeg"}  # header fine, pixels not
        await redis.xadd(stream, bad_payload)  # type: ignore[arg-type]
        await redis.xadd(stream, good)  # type: ignore[arg-type]
        malformed, errors = dropped("malformed"), dropped("error")
        jobs = await worker.take("face", 8, 0.0)
        assert [j.seq for j in jobs] == [1]  # the readable one, and the worker goes on
        assert dropped("malformed") - malformed == 1
        assert dropped("error") - errors == 1
        # the bad payload's session is told on its node's stream (this ingest ignores it:
        # it never sent that entry)
        ((_, fields),) = await redis.xrange(ingest.results_key)
        r = decode_outcome(fields)
        assert isinstance(r, Failed) and r.job.seq == 2 and "bad payload" in r.error
        pending = await redis.xpending(stream, "emostream-workers")
        assert pending["pending"] == 1  # only the job being run; the bad two are acked
    finally:
        await redis.aclose()
        await worker.close()


async def test_results_for_a_closed_session_are_ignored(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    worker = _worker(redis_server.url, "w")
    try:
        await ingest.open_session("gone")
        await ingest.submit(face_job("gone", 1))
        (job,) = await worker.take("face", 8, 0.0)
        await ingest.close_session("gone")
        await worker.publish([_scored(job)])  # no error, nobody gets it
        await ingest.open_session("other")
        await ingest.submit(face_job("other", 1))
        (job2,) = await worker.take("face", 8, 0.0)
        await worker.publish([_scored(job2)])
        other = await next_event(ingest, "other")
        assert isinstance(other, Scored) and other.job.session == "other"
    finally:
        await worker.close()


def test_results_survive_the_wire() -> None:
    from emostream.broker.wire import encode_outcome

    job = face_job("s", 7)
    scores = np.array([[0.25, 0.75]], np.float32)
    r = Scored(
        job.header(), "face-emotion/1", FaceScores([(1, 2, 30, 40)], scores, ("sad", "happy"))
    )
    back = decode_outcome(encode_outcome(r))
    assert isinstance(back, Scored)
    assert (back.job.session, back.job.seq, back.result.boxes, back.result.classes) == (
        "s",
        7,
        [(1, 2, 30, 40)],
        ("sad", "happy"),
    )
    assert np.allclose(back.result.scores, r.result.scores)
    assert abs(back.job.created - job.created) < 0.01
    assert back.job.info == job.info
