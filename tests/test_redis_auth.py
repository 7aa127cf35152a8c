"""Redis with a password and with TLS (``rediss://``), against real redis-servers.

Both roles work with the credentials in the broker URL, say clearly when they are wrong or
missing (``/readyz``: "refused our credentials", not "unreachable"), and never show the
password: not in ``/readyz``, not in a problem, not in the worker's log. TLS runs against
a TLS-only redis-server with a throw-away CA (tests/redis_server.py ``make_tls``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emostream.bench.procs import Worker
from emostream.broker.broker_config import BrokerConfig, redact_url
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.redis_worker import RedisWorker
from emostream.pipeline.outcomes import Scored
from emostream.settings import Settings
from emostream.stream.app import create_app

from brokers import broker_config, face_job, next_event
from redis_server import RedisServer, make_tls

pytestmark = pytest.mark.redis
PASSWORD = "p@ss:w/rd-s3cret"  # characters a URL must quote


@pytest.fixture()
async def locked(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    yield server
    server.stop()


def test_the_url_carries_the_password_and_the_redacted_url_hides_it() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://user:pw@h:6380/0?ssl_cert_reqs=required") == (
        "rediss://user:***@h:6380/0?ssl_cert_reqs=required"
    )
    assert redact_url("unix:///run/redis.sock?password=pw&db=1") == (
        "unix:///run/redis.sock?password=***&db=1"
    )
    for url in ("redis://:pw@h:1/0", "redis://u:pw@h:1/0", "rediss://h:1/0?ssl_ca_certs=/ca"):
        assert BrokerConfig(url=url).is_redis


async def test_both_roles_work_with_the_password(locked: RedisServer) -> None:
    assert PASSWORD not in locked.url  # quoted in the URL, unquoted by redis-py
    ingest = RedisIngest(broker_config(locked.url))
    worker = RedisWorker(broker_config(locked.url), consumer="pw-worker")
    try:
        assert await ingest.healthy()
        await ingest.open_session("s")
        await ingest.submit(face_job("s", 1))
        (job,) = await worker.take("face", 8, 5.0)
        assert job.session == "s" and job.seq == 1
    finally:
        await ingest.close()
        await worker.close()


@pytest.mark.parametrize("auth", ["", ":wrong@", "default:wrong@"])
async def test_without_the_right_password_both_roles_say_so(locked: RedisServer, auth: str) -> None:
    url = f"redis://{auth}{locked.host}:{locked.port}/0"
    ingest = RedisIngest(broker_config(url))
    worker = RedisWorker(broker_config(url), consumer="pw-worker")
    try:
        assert not await ingest.healthy()
        assert ingest.problem is not None and "refused our credentials" in ingest.problem
        assert "wrong" not in ingest.problem
        assert await worker.take("face", 8, 0.1) == []
        assert worker.problem is not None and "refused our credentials" in worker.problem
    finally:
        await ingest.close()
        await worker.close()


def test_readyz_shows_no_password(locked: RedisServer) -> None:
    for url, ready in ((locked.url, True), (locked.url.replace("s3cret", "nope"), False)):
        broker = {"url": url, "worker_timeout_s": 0}  # no worker runs: not watched here
        with TestClient(create_app(Settings(broker=broker)), raise_server_exceptions=False) as c:
            r = c.get("/readyz")
        assert r.status_code == (200 if ready else 503), r.text
        assert "s3cret" not in r.text and "nope" not in r.text and "p%40ss" not in r.text
        if ready:
            assert r.json()["broker"] == f"redis://:***@{locked.host}:{locked.port}/0"
        else:
            assert "refused our credentials" in r.json()["reason"]


async def test_a_worker_process_serves_through_the_password(
    locked: RedisServer, tmp_path: Path
) -> None:
    """``emostream worker`` with the password in ``EMOSTREAM_BROKER`` (never in argv)."""
    worker = Worker(locked.url, tmp_path, "pw-worker", EMOSTREAM_LOG_LEVEL="info")
    # a job lives 60 s (the config's deadline): the worker process loads its models first
    ingest = RedisIngest(broker_config(locked.url, deadline_ms=60_000))
    try:
        await ingest.open_session("s")
        await ingest.submit(face_job("s", 1, deadline_s=None))
        outcome = await next_event(ingest, "s")
        assert isinstance(outcome, Scored) and outcome.job.seq == 1
    finally:
        await ingest.close()
        worker.stop()
    log = worker.log()
    assert "redis://:***@" in log, log
    assert "s3cret" not in log and "p%40ss" not in log, log


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis", password=PASSWORD, tls=tls)
    try:
        server.start()
    except RuntimeError as exc:  # a redis-server built without TLS refuses the options
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS support: {exc}")
        raise
    try:
        assert server.url.startswith("rediss://") and "ssl_ca_certs=" in server.url
        ingest = RedisIngest(broker_config(server.url))
        worker = RedisWorker(broker_config(server.url), consumer="tls-worker")
        try:
            assert await ingest.healthy()
            await ingest.open_session("s")
            await ingest.submit(face_job("s", 1))
            (job,) = await worker.take("face", 8, 5.0)
            assert job.session == "s"
        finally:
            await ingest.close()
            await worker.close()
        # without our CA the server's certificate is not trusted; plain text is not spoken
        untrusted = server.url.split("?")[0]
        plain = untrusted.replace("rediss://", "redis://")
        for url, why in ((untrusted, "certificate verify failed"), (plain, "")):
            other = RedisIngest(broker_config(url))
            try:
                assert not await other.healthy()
                assert other.problem is not None and why in other.problem.lower()
                assert "s3cret" not in other.problem
            finally:
                await other.close()
    finally:
        server.stop()
