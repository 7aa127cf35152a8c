"""``serve --processes 2 --inference 2`` under real WebRTC clients: sessions spread over
two ingest processes, answered from either; a killed inference process and a killed
ingest process mid-stream; nothing left in shared memory.

Which process holds a session is read from the ``x-emostream-process`` header of its
status request (a forwarded request carries the owner's name). Waits are failure guards,
not speed checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from shared_media import media_file

from emostream.bench.procs import Server, descendants, metric
from emostream.stream.client import EmotionClient, Source

pytestmark = pytest.mark.slow
HEADER = "x-emostream-process"


def _shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if "emostream" in n}


def children(server: Server) -> dict[str, list[int]]:
    """The server's children by role (``ingest``, ``inference``), from their command lines."""
    out: dict[str, list[int]] = {"ingest": [], "inference": []}
    for pid in descendants(server.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"emostream.local.child" in argv:
            out[argv[argv.index(b"emostream.local.child") + 1].decode()].append(pid)
    return out


@pytest.fixture(scope="module")
def server(netns_ip: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    before = _shm()
    logs = tmp_path_factory.mktemp("processes")
    s = Server(
        netns_ip,
        logs,
        EMOSTREAM_LOCAL__PROCESSES="2",
        EMOSTREAM_LOCAL__INFERENCE="2",
        EMOSTREAM_LOCAL__RESTART_BACKOFF_S="0.2",
        EMOSTREAM_IDLE_TIMEOUT_S="5",
    )
    yield s
    assert s.stop() == 0
    assert _shm() <= before, _shm() - before  # no arena, no metrics directory left


@dataclass
class Feed:
    client: EmotionClient
    got: list[tuple[float, dict[str, object]]] = field(default_factory=list)
    ended: bool = False

    def faces(self, after: float = 0.0) -> list[dict[str, object]]:
        return [m for t, m in self.got if t > after and m["type"] == "face"]


@contextlib.asynccontextmanager
async def feeds(url: str, n: int) -> AsyncIterator[list[Feed]]:
    video = str(media_file("woman2.mp4"))
    async with contextlib.AsyncExitStack() as stack:
        out: list[Feed] = []
        for _ in range(n):
            async with asyncio.timeout(60):
                client = await stack.enter_async_context(
                    EmotionClient(url, source=Source.file(video, loop=True))
                )
            out.append(Feed(client))

        async def record(feed: Feed) -> None:
            with contextlib.suppress(Exception):
                async for msg in feed.client.messages(idle_timeout_s=30):
                    feed.got.append((time.monotonic(), msg.to_dict()))
            feed.ended = True

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


async def _owner(url: str, session: str) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        r = await http.get(f"{url}/v1/sessions/{session}")
        assert r.status_code == 200, r.text
        return r.headers[HEADER]


async def _spread(server: Server, n: int, stack: contextlib.AsyncExitStack) -> list[Feed]:
    """Open sessions until both ingest processes hold at least one (failure guard: 12)."""
    fs: list[Feed] = []
    while len(fs) < 12:
        fs += await stack.enter_async_context(feeds(server.url, 1))
        owners = {await _owner(server.url, f.client.session_id or "") for f in fs}
        if len(fs) >= n and len(owners) == 2:
            return fs
    raise AssertionError(f"12 sessions all landed on {owners}")


async def test_sessions_on_two_processes_are_answered_from_either(server: Server) -> None:
    async with contextlib.AsyncExitStack() as stack:
        fs = await _spread(server, 2, stack)
        await _until(lambda: all(len(f.faces()) >= 20 for f in fs), 120)
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            for f in fs:
                sid = f.client.session_id
                owner = await _owner(server.url, sid or "")
                for _ in range(6):  # fresh connections: either process accepts them
                    r = await http.get(
                        f"{server.url}/v1/sessions/{sid}", headers={"connection": "close"}
                    )
                    assert r.status_code == 200 and r.headers[HEADER] == owner
                r = await http.get(f"{server.url}/v1/sessions/{sid}/summary")
                assert r.status_code == 200, r.text
    for f in fs:
        seqs = [int(m["seq"]) for m in f.faces()]  # type: ignore[call-overload]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # in seq order
        assert {m["session"] for m in f.faces()} == {f.client.session_id}


async def test_a_killed_inference_process_is_restarted_and_its_jobs_counted(
    server: Server,
) -> None:
    async with feeds(server.url, 2) as fs:
        await _until(lambda: all(len(f.faces()) >= 20 for f in fs), 120)
        victim = children(server)["inference"][0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        await _until(lambda: all(len(f.faces(killed)) >= 30 for f in fs), 60)
        await _until(
            lambda: (
                len(children(server)["inference"]) == 2
                and victim not in children(server)["inference"]
            )
        )
        page = httpx.get(f"{server.url}/metrics", timeout=5, trust_env=False).text
        assert metric(page, "emostream_local_restarts_total", role="inference") >= 1
        assert not any(f.ended for f in fs)
        # what was lost is counted, by reason (0 if it held no job at that instant)
        lost = metric(page, "emostream_frames_dropped_total", reason="worker_died")
        print("worker_died drops:", lost)


async def test_a_killed_ingest_process_ends_only_its_own_sessions(server: Server) -> None:
    async with contextlib.AsyncExitStack() as stack:
        fs = await _spread(server, 2, stack)
        await _until(lambda: all(len(f.faces()) >= 20 for f in fs), 120)
        owners = {
            f.client.session_id: await _owner(server.url, f.client.session_id or "") for f in fs
        }
        victim_name = owners[fs[0].client.session_id]
        index = int(victim_name.split("-")[1])
        r = httpx.get(f"{server.url}/readyz", timeout=5, trust_env=False)
        pids = children(server)["ingest"]
        victim = next(p for p in pids if _ingest_index(p) == index)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        mine = [f for f in fs if owners[f.client.session_id] == victim_name]
        others = [f for f in fs if owners[f.client.session_id] != victim_name]
        await _until(lambda: all(len(f.faces(killed)) >= 30 for f in others), 60)
        await _until(
            lambda: (
                len(children(server)["ingest"]) == 2 and victim not in children(server)["ingest"]
            )
        )
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            for f in mine:  # gone with its process
                assert (
                    await http.get(f"{server.url}/v1/sessions/{f.client.session_id}")
                ).status_code == 404
        page = httpx.get(f"{server.url}/metrics", timeout=5, trust_env=False).text
        assert metric(page, "emostream_local_restarts_total", role="ingest") >= 1
        assert r.status_code == 200


def _ingest_index(pid: int) -> int:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"emostream.local.child") + 2])
