"""SSE on a real session (issue 12, defect 8): the subscriber cap, and every stream ends
with its end marker when the session does. Inside the private namespace only (a real
offer); the client publishes a looping file, so the session cannot end for want of frames.
No assertion is about speed; waits are failure guards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from shared_media import media_file

from emostream.bench.procs import Server
from emostream.stream.client import EmotionClient, Source

GUARD_S = 60.0


@pytest.fixture(scope="module")
def server(netns_ip: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(
        netns_ip,
        tmp_path_factory.mktemp("sse-limits"),
        EMOSTREAM_SESSION__MAX_SUBSCRIBERS="2",
        EMOSTREAM_IDLE_TIMEOUT_S="5",
    )
    yield s
    s.stop()


def _video() -> Path:
    return media_file("test.mp4")


async def _read_to_end(http: httpx.AsyncClient, url: str, ready: asyncio.Event) -> list[str]:
    """Every line of one event stream until the server ends it."""
    lines: list[str] = []
    async with http.stream("GET", url) as resp:
        assert resp.status_code == 200, await resp.aread()
        ready.set()
        async for line in resp.aiter_lines():
            lines.append(line)
    return lines


async def test_subscriber_cap_and_end_marker_on_a_real_session(server: Server) -> None:
    source = Source.file(str(_video()), loop=True)
    async with (
        EmotionClient(server.url, source=source) as client,
        httpx.AsyncClient(base_url=server.url, timeout=GUARD_S, trust_env=False) as http,
    ):
        url = f"/v1/sessions/{client.session_id}/events"
        ready = [asyncio.Event(), asyncio.Event()]
        streams = [asyncio.create_task(_read_to_end(http, url, r)) for r in ready]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), GUARD_S)
        third = await http.get(url)
        assert third.status_code == 429, third.text
        assert set(third.json()) == {"error", "detail"}
        assert third.json()["error"] == "too_many_subscribers"
        got = 0
        async for _ in client.messages(idle_timeout_s=GUARD_S):  # results are flowing
            got += 1
            if got >= 5:
                break
        ended = await http.delete(f"/v1/sessions/{client.session_id}")
        assert ended.status_code == 200, ended.text
        done = await asyncio.wait_for(asyncio.gather(*streams), GUARD_S)
    for lines in done:
        assert "event: end" in lines, lines[-5:]
        assert any(line.startswith("data: ") for line in lines)
