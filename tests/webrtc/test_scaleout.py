"""Scale-out with Redis: 2 ingest nodes, 3 worker processes, real WebRTC clients.

One real redis-server (its own port, inside the private namespace), three ``emostream
worker`` processes and two ``emostream serve --broker redis://…`` nodes, exactly the
processes docker compose starts. Clients stream a real video. A worker is killed with
SIGKILL mid-stream, and Redis is stopped and restarted mid-stream; sessions must live
through both and results must resume.

Timing: the gaps measured here are written to the test's output folder (and reported by
the closing note); the assertions compare them with the gaps the same run saw before the
fault, so a slow machine cannot fail them, but a stall can.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from shared_media import media_file

from emostream.bench.procs import Server, Worker
from emostream.stream.client import EmotionClient, Source

from redis_server import RedisServer

pytestmark = pytest.mark.slow


def _video() -> str:
    return str(media_file("woman2.mp4"))


@dataclass
class Stack:
    redis: RedisServer
    workers: list[Worker]
    ingest: list[Server]
    logs: Path

    def processed(self) -> list[float]:
        return [
            w.counter("emostream_frames_processed_total", modality="face") for w in self.workers
        ]


@pytest.fixture(scope="module")
def stack(netns_ip: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("scaleout")
    redis = RedisServer(logs / "redis").start()
    workers = [Worker(redis.url, logs, f"w{i}") for i in range(3)]
    env = {"EMOSTREAM_BROKER": redis.url, "EMOSTREAM_IDLE_TIMEOUT_S": "5"}
    ingest = [Server(netns_ip, logs, **env) for _ in range(2)]
    s = Stack(redis, workers, ingest, logs)
    yield s
    for p in [*s.ingest, *s.workers]:
        p.stop()
    s.redis.stop()


@dataclass
class Feed:
    """Every message one client gets, with its arrival time."""

    client: EmotionClient
    got: list[tuple[float, dict[str, object]]] = field(default_factory=list)

    def faces_after(self, t: float) -> list[tuple[float, dict[str, object]]]:
        return [(at, m) for at, m in self.got if at > t and m["type"] == "face"]

    def errors(self) -> list[dict[str, object]]:
        return [m for _, m in self.got if m["type"] == "error"]

    def max_gap(self, start: float, end: float) -> float:
        times = [start] + [at for at, _ in self.faces_after(start) if at <= end] + [end]
        return max(b - a for a, b in itertools.pairwise(times))


@contextlib.asynccontextmanager
async def feeds(urls: list[str]) -> AsyncIterator[list[Feed]]:
    video = _video()
    async with contextlib.AsyncExitStack() as stack:
        out: list[Feed] = []
        for url in urls:
            async with asyncio.timeout(60):  # a failure guard: a stuck connect fails the test
                client = await stack.enter_async_context(
                    EmotionClient(url, source=Source.file(video, loop=True))
                )
            out.append(Feed(client))

        async def record(feed: Feed) -> None:
            async for msg in feed.client.messages(idle_timeout_s=60):
                feed.got.append((time.monotonic(), msg.to_dict()))

        tasks = [asyncio.create_task(record(f)) for f in out]
        try:
            yield out
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _until(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached (failure guard, not a speed check)")


def _report(stack: Stack, name: str, figures: dict[str, object]) -> None:
    path = stack.logs.parent / "scaleout-figures.jsonl"
    with path.open("a") as f:
        f.write(json.dumps({"test": name, **figures}) + "\n")
    print(name, figures)


async def _alive(url: str, session: str) -> bool:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        return (await http.get(f"{url}/v1/sessions/{session}")).status_code == 200


async def test_two_ingest_nodes_and_three_workers_serve_four_sessions(stack: Stack) -> None:
    before = stack.processed()
    urls = [stack.ingest[i % 2].url for i in range(4)]
    async with feeds(urls) as fs:
        await _until(lambda: all(len(f.faces_after(0)) >= 30 for f in fs), 120)
        await _until(lambda: all(a > b for a, b in zip(stack.processed(), before, strict=True)))
    for f in fs:
        sid = f.client.session_id
        faces = [m for _, m in f.faces_after(0)]
        assert {m["session"] for m in faces} == {sid}  # each session only its own results
        with_face = [m for m in faces if m["faces"]]
        assert len(with_face) >= 0.8 * len(faces)
    done = [a - b for a, b in zip(stack.processed(), before, strict=True)]
    _report(stack, "four_sessions", {"frames_per_worker": done})
    assert all(n > 0 for n in done)  # every worker took part


async def test_a_worker_killed_mid_stream_loses_no_session(stack: Stack) -> None:
    urls = [s.url for s in stack.ingest]
    async with feeds(urls) as fs:
        await _until(lambda: all(len(f.faces_after(0)) >= 30 for f in fs), 120)
        t0 = time.monotonic()
        await asyncio.sleep(3.0)
        baseline = max(f.max_gap(t0, time.monotonic()) for f in fs)
        victim = stack.workers.pop(0)
        killed = time.monotonic()
        victim.kill()  # SIGKILL: no goodbye, its pending jobs stay in the group
        await _until(lambda: all(len(f.faces_after(killed)) >= 30 for f in fs), 60)
        resumed = [f.faces_after(killed)[0][0] - killed for f in fs]
        gap = max(f.max_gap(killed, time.monotonic()) for f in fs)
        for f in fs:
            assert f.client.session_id and await _alive(f.client.url or "", f.client.session_id)
        # a restarted worker loads its models and rejoins the group
        # started in a thread: its start-up wait must not stall the clients' event loop
        fresh = await asyncio.to_thread(Worker, stack.redis.url, stack.logs, "w0-restarted")
        stack.workers.append(fresh)
        await _until(
            lambda: fresh.counter("emostream_frames_processed_total", modality="face") > 0, 120
        )
    _report(
        stack,
        "worker_sigkill",
        {"baseline_max_gap_s": baseline, "first_result_after_kill_s": resumed, "max_gap_s": gap},
    )
    assert gap <= max(1.0, 3 * baseline), (gap, baseline)


async def test_redis_restarted_mid_stream_sessions_survive(stack: Stack) -> None:
    urls = [s.url for s in stack.ingest]
    async with feeds(urls) as fs, httpx.AsyncClient(trust_env=False, timeout=5) as http:
        await _until(lambda: all(len(f.faces_after(0)) >= 30 for f in fs), 120)
        sessions = [f.client.session_id for f in fs]
        stack.redis.stop()
        stopped = time.monotonic()
        await _until(lambda: all(f.errors() for f in fs), 30)  # told on the data channel
        for url in urls:
            ready = await http.get(f"{url}/readyz")
            assert ready.status_code == 503 and "unreachable" in ready.json()["reason"]
        await asyncio.sleep(1.0)
        stack.redis.start()  # same port, empty
        restarted = time.monotonic()
        await _until(lambda: all(len(f.faces_after(restarted)) >= 15 for f in fs), 60)
        resumed = [f.faces_after(restarted)[0][0] - restarted for f in fs]
        for url in urls:
            assert (await http.get(f"{url}/readyz")).status_code == 200
        for f, sid in zip(fs, sessions, strict=True):
            assert f.client.session_id == sid and await _alive(f.client.url or "", sid or "")
    error = fs[0].errors()[0]
    assert error["code"] == "broker_unavailable" and error["session"] == sessions[0]
    _report(
        stack,
        "redis_restart",
        {"outage_s": restarted - stopped, "first_result_after_restart_s": resumed},
    )
