"""The real-time path end to end: a real server process, real aiortc clients, real video.

Everything here runs inside the private network namespace (see conftest.py). The server is
``emostream serve`` bound to the namespace's address; clients are ``EmotionClient``s in this
process or ``emostream client`` subprocesses. No assertion is about speed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from shared_media import media_file

from emostream.bench.procs import EMOSTREAM, Server, Worker
from emostream.stream.client import EmotionClient, Source

from redis_server import RedisServer


def _video() -> Path:
    return media_file("woman2.mp4")


@pytest.fixture(scope="module", params=["memory", "processes", "redis"])
def server(
    request: pytest.FixtureRequest, netns_ip: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The same tests against every layout: in-process; ``serve --processes 2`` (two
    ingest processes on one port, an inference process, the local broker); and Redis with
    a separate worker."""
    logs = tmp_path_factory.mktemp(f"ingest-{request.param}")
    if request.param in ("memory", "processes"):
        layout = {"EMOSTREAM_LOCAL__PROCESSES": "2"} if request.param == "processes" else {}
        s = Server(netns_ip, logs, EMOSTREAM_IDLE_TIMEOUT_S="2", **layout)
        yield s
        s.stop()
        return
    redis = RedisServer(logs / "redis").start()
    worker = Worker(redis.url, logs, "ingest-tests-worker")
    s = Server(netns_ip, logs, EMOSTREAM_IDLE_TIMEOUT_S="2", EMOSTREAM_BROKER=redis.url)
    yield s
    s.stop()
    worker.stop()
    redis.stop()


async def _collect(client: EmotionClient, n: int) -> list[dict]:
    out: list[dict] = []
    async for msg in client.messages(idle_timeout_s=20):
        out.append(msg.to_dict())  # as the JSON on the wire, to compare with SSE
        if len(out) >= n:
            break
    return out


async def _sse(url: str, n: int, ready: asyncio.Event) -> list[dict]:
    out: list[dict] = []
    async with (
        httpx.AsyncClient(timeout=30, trust_env=False) as http,
        http.stream("GET", url) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        ready.set()
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                if len(out) >= n:
                    break
    return out


async def test_client_streams_a_real_video_and_gets_faces_on_channel_and_sse(
    server: Server,
) -> None:
    video = _video()
    async with EmotionClient(server.url, source=Source.file(str(video))) as client:
        sid = client.session_id
        ready = asyncio.Event()
        sse = asyncio.create_task(_sse(f"{server.url}/v1/sessions/{sid}/events", 30, ready))
        await asyncio.wait_for(ready.wait(), 30)
        msgs = await _collect(client, 90)  # 3 s of a 30 fps video
        sse_msgs = await asyncio.wait_for(sse, 60)
        async with httpx.AsyncClient(trust_env=False) as http:
            status = (await http.get(f"{server.url}/v1/sessions/{sid}")).json()
    assert len(msgs) == 90
    assert all(m["type"] == "face" and m["session"] == sid and m["schema"] == 1 for m in msgs)
    seqs = [m["seq"] for m in msgs]
    pts = [m["pts"] for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert pts == sorted(pts)
    with_face = [m for m in msgs if m["faces"]]
    assert len(with_face) >= 0.9 * len(msgs)  # one face throughout the clip
    assert len({f["track_id"] for m in with_face for f in m["faces"]}) <= 3
    box = with_face[0]["faces"][0]["box"]
    assert 0 <= box[0] < 596 and 0 <= box[1] < 336  # source-frame pixels
    # frames arrived far faster than the deadline drops them: most frames were processed
    assert status["frames_in"] > 0 and status["messages_out"] >= 0.8 * status["frames_in"]
    # the session's own figures (no per-session labels in Prometheus)
    lat = status["latency_ms"]
    assert lat["results"] >= 90 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert sum(status["classes"].values()) >= len(with_face)
    # SSE carries the same messages as the data channel
    by_seq = {m["seq"]: m for m in msgs}
    common = [m for m in sse_msgs if m["seq"] in by_seq]
    assert len(common) >= 20
    assert all(m["faces"] == by_seq[m["seq"]]["faces"] for m in common)


async def test_two_sessions_get_only_their_own_results(server: Server) -> None:
    video = str(_video())
    async with (
        EmotionClient(server.url, source=Source.file(video)) as a,
        EmotionClient(server.url, source=Source.file(video)) as b,
    ):
        ma, mb = await asyncio.gather(_collect(a, 30), _collect(b, 30))
    assert a.session_id != b.session_id
    assert {m["session"] for m in ma} == {a.session_id}
    assert {m["session"] for m in mb} == {b.session_id}


async def test_whip_publish_and_delete(server: Server) -> None:
    async with EmotionClient(source=Source.file(str(_video())), whip=f"{server.url}/whip") as c:
        assert c.resource is not None and "/whip/" in c.resource
        msgs = await _collect(c, 10)
        resource = c.resource
    assert len(msgs) == 10
    async with httpx.AsyncClient(trust_env=False) as http:  # the client DELETEd it
        assert (await http.delete(resource)).status_code == 404


def test_a_killed_client_is_cleaned_up_within_the_idle_timeout(server: Server) -> None:
    proc = subprocess.Popen(
        [*EMOSTREAM, "client", str(_video()), "--url", server.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "session" in line, line
    sid = line.strip().rsplit(" ", 1)[-1]
    status = f"{server.url}/v1/sessions/{sid}"
    assert httpx.get(status, trust_env=False).status_code == 200
    proc.send_signal(signal.SIGKILL)  # no DELETE, no goodbye
    proc.wait()
    deadline = time.monotonic() + 30  # idle timeout is 2 s; this is only a failure guard
    while time.monotonic() < deadline:
        if httpx.get(status, trust_env=False).status_code == 404:
            break
        time.sleep(0.25)
    assert httpx.get(status, trust_env=False).status_code == 404
    metrics = httpx.get(f"{server.url}/metrics", trust_env=False).text
    assert "emostream_active_sessions 0.0" in metrics


# -- bad input: each gets a 4xx with a reason, and the server lives on ------------------

VP9_ONLY = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:98 VP9/90000\r\n"
)
NO_MEDIA = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
BROKEN_VP8 = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"  # no ICE, no DTLS
)


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/v1/offer", {"json": {"sdp": "hello", "type": "offer"}}, 400, "bad_sdp"),
        ("/v1/offer", {"json": {"sdp": NO_MEDIA, "type": "offer"}}, 400, "bad_sdp"),
        ("/v1/offer", {"json": {"sdp": VP9_ONLY, "type": "offer"}}, 415, "unsupported_codec"),
        ("/v1/offer", {"json": {"sdp": BROKEN_VP8, "type": "offer"}}, 400, "bad_sdp"),
        ("/v1/offer", {"json": {"sdp": VP9_ONLY, "type": "answer"}}, 400, "bad_offer"),
        ("/v1/offer", {"content": b"{not json"}, 400, "bad_offer"),
        (
            "/v1/offer",
            {"json": {"sdp": "v=0\n" + "a=x\n" * 40000, "type": "offer"}},
            413,
            "body_too_large",
        ),
        (
            "/whip",
            {"content": VP9_ONLY, "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "/whip",
            {"content": "v=0\n" + "a=x\n" * 20000, "headers": {"content-type": "application/sdp"}},
            413,
            "body_too_large",
        ),
        (
            "/whip",
            {"content": VP9_ONLY, "headers": {"content-type": "application/sdp"}},
            415,
            "unsupported_codec",
        ),
    ],
)
def test_bad_offers_get_a_4xx_with_a_reason(
    server: Server, path: str, kwargs: dict, status: int, code: str
) -> None:
    r = httpx.post(server.url + path, trust_env=False, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["detail"]
    assert httpx.get(f"{server.url}/readyz", trust_env=False).status_code == 200


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("path", ["/v1/sessions/nope", "/v1/sessions/nope/events", "/whip/nope"])
def test_unknown_sessions_are_404(server: Server, method: str, path: str) -> None:
    if method == "GET" and path.startswith("/whip"):
        pytest.skip("WHIP resources answer DELETE only")
    if method == "DELETE" and path.endswith("/events"):
        pytest.skip("events are read-only")
    r = httpx.request(method, server.url + path, trust_env=False)
    assert r.status_code == 404 and r.json()["error"] == "unknown_session"


async def test_session_limit_and_tokens(netns_ip: str) -> None:
    s = Server(netns_ip, None, EMOSTREAM_MAX_SESSIONS="1", EMOSTREAM_API_TOKENS="secret-1")
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.post(f"{s.url}/v1/offer", json={"sdp": VP9_ONLY, "type": "offer"})
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        video = str(_video())
        async with EmotionClient(s.url, source=Source.file(video), token="secret-1") as first:
            assert len(await _collect(first, 5)) == 5
            second = EmotionClient(s.url, source=Source.file(video), token="secret-1")
            with pytest.raises(Exception, match=r"503.*too_many_sessions"):
                await second.connect()
            await second.close()
            async with httpx.AsyncClient(trust_env=False) as http:
                url = f"{s.url}/v1/sessions/{first.session_id}/events?token=secret-1"
                async with http.stream("GET", url) as resp:
                    assert resp.status_code == 200  # EventSource-style token works
    finally:
        s.stop()
