"""The real ``emostream worker`` process against a real redis-server on loopback.

What a container would run: the console script with ``EMOSTREAM_*`` settings. It serves
jobs and says on /metrics what it did; it survives garbage on the stream and a Redis that
is not there yet; SIGTERM ends it cleanly and it leaves the consumer group.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from emostream.bench.procs import EMOSTREAM, Worker, base_env, free_port
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.wire import encode_job
from emostream.models.repository import ModelRepository
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.outcomes import Scored
from emostream.stream.media import read_image

from redis_server import RedisServer

pytestmark = pytest.mark.slow
GROUP = "emostream-workers"
STREAM = "emostream:jobs:face"


def face_job(session: str, seq: int, image: np.ndarray, deadline_s: float = 30.0) -> Job:
    """A job as an ingest node makes it: downscaled once, with its source size."""
    h, w = image.shape[:2]
    scale = min(1.0, 640 / max(h, w))
    frame = cv2.resize(image, (round(w * scale), round(h * scale))) if scale < 1 else image
    info = FrameInfo(w, h, scale)
    return Job(session, seq, seq / 15, frame, info, deadline=time.monotonic() + deadline_s)


def _consumers(url: str) -> dict[str, int]:
    r = redis.Redis.from_url(url)
    try:
        return {c["name"].decode(): c["pending"] for c in r.xinfo_consumers(STREAM, GROUP)}  # type: ignore[union-attr]
    except redis.ResponseError:
        return {}
    finally:
        r.close()


def _wait(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached (failure guard, not a speed check)")


@pytest.mark.parametrize(
    ("broker", "why"),
    [("memory", "needs a shared broker"), ("http://example", "not understood")],
)
def test_worker_refuses_a_broker_it_cannot_use(broker: str, why: str) -> None:
    proc = subprocess.run(
        [*EMOSTREAM, "worker", "--broker", broker, "--metrics-port", "0"],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert why in proc.stderr


def test_worker_serves_jobs_and_survives_garbage_on_the_stream(
    redis_server: RedisServer, repo: ModelRepository, media: Path, output_dir: Path
) -> None:
    worker = Worker(redis_server.url, output_dir, "w1")
    try:
        r = redis.Redis.from_url(redis_server.url)
        _wait(lambda: "w1" in _consumers(redis_server.url))
        r.xadd(STREAM, {"v": "1", "session": "x"})  # a header missing most fields
        r.xadd(STREAM, {"what": "ever"})
        _wait(lambda: worker.counter("emostream_frames_dropped_total", reason="malformed") == 2)
        assert worker.proc.poll() is None  # still running

        async def one_result() -> tuple[int, str]:
            ingest = RedisIngest(BrokerConfig(url=redis_server.url, deadline_ms=30_000))
            await ingest.open_session("s")
            await ingest.submit(face_job("s", 1, read_image(media / "justin.jpg")))
            async for res in ingest.results("s"):
                await ingest.close()
                assert isinstance(res, Scored), res
                return len(res.result.boxes), res.model
            raise AssertionError("no result")

        faces, model = asyncio.run(asyncio.wait_for(one_result(), 60))
        assert (faces, model) == (1, f"face-emotion/{repo.resolve('face-emotion')}")
        assert worker.counter("emostream_frames_processed_total", modality="face") == 1
        assert r.xpending(STREAM, GROUP)["pending"] == 0  # everything acked
        assert worker.counter("emostream_worker_info", worker="w1") == 1
        assert worker.counter("emostream_asyncio_tasks") >= 1  # its loop, seen at the scrape
        r.close()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert "on CPUExecutionProvider" in worker.log() and "batch up to 16" in worker.log()


def test_sigterm_leaves_the_group_and_exits_zero(
    redis_server: RedisServer, repo: ModelRepository, output_dir: Path
) -> None:
    worker = Worker(redis_server.url, output_dir, "leaver")
    _wait(lambda: "leaver" in _consumers(redis_server.url))
    assert worker.stop() == 0, worker.log()
    assert "leaver" not in _consumers(redis_server.url)
    assert "stopped" in worker.log()


@pytest.mark.redis
def test_a_worker_started_before_redis_waits_and_joins(
    tmp_path: Path, repo: ModelRepository, output_dir: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = Worker(url, output_dir, "early")  # metrics up: models loaded, Redis not there
    server = RedisServer(tmp_path / "redis", port=port)
    try:
        time.sleep(1.0)
        assert worker.proc.poll() is None, worker.log()
        server.start()
        _wait(lambda: "early" in _consumers(url))
        r = redis.Redis.from_url(url)
        fields = encode_job(face_job("s", 1, np.full((64, 64, 3), 90, np.uint8)))
        r.xadd(STREAM, fields)  # type: ignore[arg-type]
        _wait(lambda: worker.counter("emostream_frames_processed_total", modality="face") == 1)
        r.close()
    finally:
        assert worker.stop() == 0, worker.log()
        server.stop()
    assert "unreachable" in worker.log()
