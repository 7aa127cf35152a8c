"""No live worker: the ingest node says so (``problem``, ``/readyz``) and each session hears
it once, against a real redis-server (``broker/redis_heartbeat.py``, ``broker/outage.py``).

Workers send heartbeats; when none has for ``worker_timeout_s`` (by Redis' clock), each
open session gets one ``no_worker`` error message, one opened meanwhile gets it at open,
a worker back clears it, and the next outage tells them again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from emostream.bench.procs import Worker
from emostream.broker.outage import Outage
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.redis_worker import RedisWorker
from emostream.broker.session_queues import SessionQueues
from emostream.pipeline.outcomes import BrokerNotice, SessionEvent
from emostream.settings import Settings
from emostream.stream.app import create_app
from emostream.stream.server_config import SessionConfig
from emostream.stream.session import Session
from emostream.stream.session_manager import SessionManager

from brokers import broker_config
from redis_server import RedisServer

GUARD_S = 60.0  # failure guards, not speed checks
#: Quick beats for the in-process tests (the process test keeps the defaults).
QUICK = {"heartbeat_ms": 100, "worker_timeout_s": 0.5}


def test_an_outage_tells_each_session_once_and_new_ones_at_open() -> None:
    async def run() -> None:
        queues = SessionQueues()
        outage = Outage(queues)
        queues.open("a")
        outage.begin("no_worker", "none alive")
        outage.begin("no_worker", "still none")  # the same outage: nobody told twice
        queues.open("b")
        outage.on_open("b")
        assert outage.current == BrokerNotice("none alive", "no_worker")
        outage.end()
        queues.open("c")
        outage.on_open("c")  # no outage: nothing
        outage.begin("no_worker", "gone again")  # the next one tells every session again

        async def heard(session: str) -> list[SessionEvent]:
            return [e async for e in queues.read(session)]

        readers = {s: asyncio.create_task(heard(s)) for s in ("a", "b", "c")}
        await asyncio.sleep(0)  # each reader holds its queue
        for s in readers:
            queues.close(s)
        got = {s: await r for s, r in readers.items()}
        again = BrokerNotice("gone again", "no_worker")
        assert got["a"] == [BrokerNotice("none alive", "no_worker"), again]
        assert got["b"] == [BrokerNotice("none alive", "no_worker"), again]
        assert got["c"] == [again]

    asyncio.run(run())


async def _until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def _errors(sent: list[dict]) -> list[str]:
    return [m["code"] for m in sent if m["type"] == "error"]


async def _open(manager: SessionManager) -> tuple[Session, list[dict]]:
    session = await manager.open()
    sent: list[dict] = []
    session.add_output(lambda text: sent.append(json.loads(text)))
    return session, sent


@pytest.mark.redis
async def test_sessions_hear_once_per_outage_and_a_worker_ends_it(
    redis_server: RedisServer,
) -> None:
    config = broker_config(redis_server.url, **QUICK)
    ingest = RedisIngest(config)
    await ingest.start()
    manager = SessionManager(ingest, SessionConfig())
    worker = RedisWorker(config, consumer="w")
    try:
        (_, sent_a), (_, sent_b) = await _open(manager), await _open(manager)
        await _until(lambda: ingest.problem is not None)
        assert "no worker alive" in (ingest.problem or "") and not await ingest.healthy()
        await _until(lambda: bool(_errors(sent_a)) and bool(_errors(sent_b)))
        c = await manager.open()  # opened during the outage: told at open, and a data
        await _until(lambda: c.messages_out == 1)  # channel opening later hears it too
        assert [n.code for n in c.notices] == ["no_worker"]
        await asyncio.sleep(10 * config.heartbeat_s)  # more looks: nobody is told twice
        assert _errors(sent_a) == _errors(sent_b) == ["no_worker"] and c.messages_out == 1

        await worker.start()  # its heartbeat begins
        await _until(lambda: ingest.problem is None)
        assert await ingest.healthy()

        (beat,) = worker.tasks
        await beat.stop()  # its heartbeats stop as if killed; its entry stays behind
        await _until(lambda: ingest.problem is not None)
        for sent in (sent_a, sent_b):  # the next outage tells everyone again
            await _until(lambda s=sent: len(_errors(s)) == 2)  # type: ignore[misc]
        await _until(lambda: c.messages_out == 2)
        await asyncio.sleep(10 * config.heartbeat_s)
        assert _errors(sent_a) == _errors(sent_b) == ["no_worker"] * 2 and c.messages_out == 2
    finally:
        await manager.close()
        await worker.close()
        await ingest.close()


@pytest.mark.redis
async def test_a_worker_beats_from_start_and_leaves_on_a_clean_exit(
    redis_server: RedisServer,
) -> None:
    """Its consumer name in ``emostream:workers``, scored with Redis' clock; gone after
    ``close`` (so no ingest node counts it alive)."""
    worker = RedisWorker(broker_config(redis_server.url, **QUICK), consumer="w")
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await worker.start()
        for _ in range(int(GUARD_S / 0.05)):
            if await r.zscore("emostream:workers", "w") is not None:
                break
            await asyncio.sleep(0.05)
        seconds, micros = await r.time()
        beat = await r.zscore("emostream:workers", "w")
        assert beat is not None and abs(beat - (seconds + micros / 1e6)) < GUARD_S
        await worker.close()
        assert await r.zscore("emostream:workers", "w") is None
    finally:
        await r.aclose()


def _ready(client: TestClient) -> httpx.Response:
    return client.get("/readyz")


def _until_sync(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


@pytest.mark.redis
@pytest.mark.slow
def test_readyz_follows_a_real_worker_process(redis_server: RedisServer, tmp_path: Path) -> None:
    """Default timings: 503 with the reason while no ``emostream worker`` runs, 200 once
    one does, 503 again when it is SIGKILLed."""
    settings = Settings(broker={"url": redis_server.url})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        _until_sync(lambda: _ready(client).status_code == 503)
        assert "no worker alive" in _ready(client).json()["reason"]
        worker = Worker(redis_server.url, tmp_path, "w-ready")
        try:
            _until_sync(lambda: _ready(client).status_code == 200)
        finally:
            worker.kill()
        _until_sync(lambda: _ready(client).status_code == 503)
        assert "no worker alive" in _ready(client).json()["reason"]
