"""Bounded resources (issue 12, defects 8, 10, 11): connection, header and body timeouts,
the upload budget, the connection cap, the server's own replies as JSON, SSE subscriber
limits and end markers, the image whose header lies about its size, the looping client.

A real uvicorn server (``stream/server.py``, as ``emostream serve`` runs it) in a thread on
127.0.0.1, with short timeouts from settings; raw sockets play the slow or broken client.
No WebRTC offer is made here. Every wait is a bounded failure guard, never a speed check.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import uvicorn
from av.audio.frame import AudioFrame
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from emostream.bench.procs import free_port
from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream import session_routes
from emostream.stream.app import AppState, create_app
from emostream.stream.client import Source
from emostream.stream.errors import ApiError, api_error_handler
from emostream.stream.fanout import (
    END_EVENT,
    QUEUE_SIZE,
    Fanout,
    SubscriberLimitError,
    event_stream,
)
from emostream.stream.media import MediaError, decode_image
from emostream.stream.server import uvicorn_config

GUARD_S = 20.0  # the longest any wait here may take before the test fails
KEEP_ALIVE_S = 0.5
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
BUDGET = 3 * 1024 * 1024
PART = 1200 * 1024  # declared by each partial upload: two fit in the budget, three do not


# --- a real server in a thread ----------------------------------------------------------


class Running:
    def __init__(self, app: FastAPI, port: int) -> None:
        self.app, self.port = app, port
        self.base = f"http://127.0.0.1:{port}"

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=GUARD_S)
        s.settimeout(GUARD_S)
        return s

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, trust_env=False, timeout=GUARD_S)


@contextlib.contextmanager
def serving(settings: Settings, state: AppState | None = None) -> Iterator[Running]:
    app = create_app(settings, state)
    server = uvicorn.Server(uvicorn_config(app, settings))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while not server.started:
        assert thread.is_alive(), "the server thread exited before it started"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Running(app, settings.server.port)
    finally:
        server.should_exit = True
        thread.join(GUARD_S)


def _settings(model_root: Path, **server: object) -> Settings:
    return Settings(
        model_root=model_root,
        log_level="warning",
        server={
            "port": free_port(),
            "keep_alive_s": KEEP_ALIVE_S,
            "header_timeout_s": HEADER_TIMEOUT_S,
            "body_timeout_s": BODY_TIMEOUT_S,
            "max_header_bytes": 4096,
            **server,
        },
        limits={"max_upload_bytes_in_flight": BUDGET},
    )


@pytest.fixture(scope="module")
def live(repo: ModelRepository) -> Iterator[Running]:
    with serving(_settings(repo.root)) as running:
        yield running


def _read_reply(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from a raw socket, read until the server closes it."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _assert_json_error(
    status: int, headers: dict[str, str], body: bytes, want: int, code: str
) -> None:
    assert status == want, body
    assert headers["content-type"].startswith("application/json"), headers
    parsed = json.loads(body)
    assert set(parsed) == {"error", "detail"} and parsed["error"] == code, parsed
    assert parsed["detail"].strip(), parsed


def _trickle(s: socket.socket, data: bytes, every_s: float = 0.05) -> None:
    """Send ``data`` a byte at a time until the server answers or hangs up (bounded)."""
    for byte in data:
        readable, _, _ = select.select([s], [], [], every_s)
        if readable:
            return
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return
    pytest.fail("the server let the whole trickle through without answering")


def _jpeg(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# --- connections, heads and bodies ------------------------------------------------------


def test_idle_connection_is_closed_without_a_request(live: Running) -> None:
    with live.connect() as s:
        assert s.recv(1) == b""  # closed by the server (the guard would raise first)


def test_idle_connection_is_closed_after_a_response(live: Running) -> None:
    with live.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = _read_reply(s)  # read to EOF: the keep-alive timeout ended it
        assert status == 200 and b'"ok"' in body


def test_headers_sent_byte_by_byte_get_408(live: Running) -> None:
    with live.connect() as s:
        _trickle(s, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 2000)
        _assert_json_error(*_read_reply(s), 408, "header_timeout")


def test_body_sent_byte_by_byte_gets_408(live: Running) -> None:
    with live.connect() as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        _trickle(s, b"\xff" * 2000)
        _assert_json_error(*_read_reply(s), 408, "body_timeout")


def test_the_rest_of_a_refused_body_is_not_drained_forever(live: Running) -> None:
    """A 413 goes out before the body is read; uvicorn would then read and drop the rest
    at whatever pace the client sends it. Here that lasts body_timeout_s at most."""
    with live.connect() as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: %d\r\n\r\n" % (20 * 1024 * 1024)
        )
        reply = b""
        while not reply.endswith(b"}"):
            chunk = s.recv(4096)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply, reply
        _trickle(s, b"\xff" * 2000)  # returns once the server hangs up
        assert s.recv(1) == b""


BIG_HEAD = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8000  # > max_header_bytes


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"\x00\x01 garbage \xfe\r\n\r\n", 400, "bad_http_request"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header Name: x\r\n\r\n", 400, "bad_http_request"),
        (BIG_HEAD, 400, "bad_http_request"),  # still incomplete: h11's own limit
        (BIG_HEAD + b"\r\n\r\n", 431, "headers_too_large"),  # whole in one read
    ],
    ids=["garbage", "bad-header", "head-too-big-incomplete", "head-too-big-whole"],
)
def test_invalid_http_gets_json_errors(
    live: Running, request_bytes: bytes, status: int, code: str
) -> None:
    with live.connect() as s:
        s.sendall(request_bytes)
        _assert_json_error(*_read_reply(s), status, code)


def test_partial_uploads_beyond_the_budget_get_503_and_the_budget_comes_back(
    live: Running,
) -> None:
    budget = live.app.state.uploads
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % PART
    )
    held: list[socket.socket] = []
    try:
        for _ in range(2):
            s = live.connect()
            held.append(s)
            s.sendall(head + b"\xff" * 1024)
        deadline = time.monotonic() + GUARD_S
        while budget.used < 2 * PART:
            assert time.monotonic() < deadline, f"reserved {budget.used}, want {2 * PART}"
            time.sleep(0.02)
        with live.connect() as s:
            s.sendall(head + b"\xff" * 1024)
            status, headers, body = _read_reply(s)
        _assert_json_error(status, headers, body, 503, "uploads_busy")
        assert headers["retry-after"] == "1"
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + GUARD_S
    while budget.used:
        assert time.monotonic() < deadline, f"{budget.used} bytes still reserved"
        time.sleep(0.02)
    with live.client() as c:
        r = c.post("/v1/predict", content=_jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text


def test_connections_beyond_the_cap_get_json_503(tmp_path: Path) -> None:
    state = AppState(_settings(tmp_path, keep_alive_s=30, max_connections=2))
    state.load_error = "not loaded in this test"
    with serving(state.settings, state) as running:
        idle = [running.connect() for _ in range(2)]
        with running.client() as c:
            r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["error"] == "server_busy", r.text
        assert set(r.json()) == {"error", "detail"} and r.headers["retry-after"] == "1"
        for s in idle:
            s.close()
        deadline = time.monotonic() + GUARD_S
        while True:
            with running.client() as c:
                if c.get("/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the cap did not free up"
            time.sleep(0.05)


def test_https_with_the_tls_settings(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (it makes the test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    settings = _settings(tmp_path, ssl_certfile=str(cert), ssl_keyfile=str(key))
    state = AppState(settings)
    state.load_error = "not loaded in this test"
    with serving(settings, state) as running:
        url = f"https://127.0.0.1:{running.port}/healthz"
        with httpx.Client(verify=str(cert), trust_env=False, timeout=GUARD_S) as c:
            assert c.get(url).json()["status"] == "ok"


# --- SSE --------------------------------------------------------------------------------


async def _drain(stream: object) -> list[str]:
    async def collect() -> list[str]:
        return [part async for part in stream]  # type: ignore[attr-defined]

    return await asyncio.wait_for(collect(), GUARD_S)


def test_end_marker_is_delivered_when_the_queue_is_full_at_close() -> None:
    async def run() -> list[str]:
        fanout = Fanout(max_subscribers=2)
        queue = fanout.subscribe()
        for i in range(QUEUE_SIZE + 10):  # a reader that never kept up
            fanout.publish(f'{{"n": {i}}}')
        assert queue.full()
        fanout.close()
        assert len(fanout) == 0
        return await _drain(event_stream(fanout, queue, "s1", heartbeat_s=0.05))

    parts = asyncio.run(run())
    assert parts[-1] == END_EVENT
    data = [p for p in parts if p.startswith("data: ")]
    assert len(data) == QUEUE_SIZE - 1  # the oldest made room for the newest and the end
    assert data[-1] == f'data: {{"n": {QUEUE_SIZE + 9}}}\n\n'


def test_stream_ends_on_close_even_without_its_marker() -> None:
    async def run() -> list[str]:
        fanout = Fanout(max_subscribers=2)
        queue = fanout.subscribe()
        fanout.unsubscribe(queue)  # so close() cannot reach it: only the closed flag can
        fanout.close()
        return await _drain(event_stream(fanout, queue, "s1", heartbeat_s=0.05))

    assert asyncio.run(run())[-1] == END_EVENT


def test_subscribing_after_close_ends_at_once() -> None:
    async def run() -> list[str]:
        fanout = Fanout(max_subscribers=2)
        fanout.close()
        queue = fanout.subscribe()
        return await _drain(event_stream(fanout, queue, "s1", heartbeat_s=60))

    assert asyncio.run(run()) == [": session s1\n\n", END_EVENT]


class _Session:
    """What the events route uses of a session (a real one needs a peer connection)."""

    def __init__(self, fanout: Fanout) -> None:
        self.id = "s1"
        self.subscribers = fanout

    def subscribe(self) -> object:
        return self.subscribers.subscribe()


class _Manager:
    def __init__(self, session: _Session) -> None:
        self.session = session

    def get(self, session_id: str) -> _Session | None:
        return self.session if session_id == self.session.id else None


def test_events_route_caps_subscribers_with_429_and_ends_closed_streams() -> None:
    async def make() -> tuple[Fanout, list[object]]:
        fanout = Fanout(max_subscribers=2)
        return fanout, [fanout.subscribe(), fanout.subscribe()]

    fanout, _ = asyncio.run(make())
    app = FastAPI()
    app.add_exception_handler(ApiError, api_error_handler)
    manager = _Manager(_Session(fanout))
    app.include_router(session_routes.router(Settings(), lambda: manager))  # type: ignore[arg-type,return-value]
    with TestClient(app) as c:
        r = c.get("/v1/sessions/s1/events")
        assert r.status_code == 429 and r.json()["error"] == "too_many_subscribers", r.text
        with pytest.raises(SubscriberLimitError):
            fanout.subscribe()
        fanout.queues.clear()
        fanout.close()
        r = c.get("/v1/sessions/s1/events")
        assert r.status_code == 200 and r.text.endswith(END_EVENT), r.text


# --- the image whose header lies --------------------------------------------------------


def _claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF segment patched to claim ``width`` x ``height``."""
    b = bytearray(jpeg)
    i = 2
    while i + 9 < len(b):
        marker, length = b[i + 1], int.from_bytes(b[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            b[i + 5 : i + 7] = height.to_bytes(2, "big")
            b[i + 7 : i + 9] = width.to_bytes(2, "big")
            return bytes(b)
        i += 2 + length
    raise AssertionError("no SOF segment")


def test_tiny_jpeg_claiming_a_huge_canvas_is_refused_before_decoding(live: Running) -> None:
    liar = _claim_size(_jpeg(8, 8), 6000, 6000)
    assert Image.open(io.BytesIO(liar)).size == (6000, 6000) and len(liar) < 1000
    with pytest.raises(MediaError) as err:
        decode_image(liar)
    assert err.value.code == "corrupt_image" and err.value.status == 422
    with live.client() as c:
        r = c.post("/v1/predict", content=liar, headers={"content-type": "image/jpeg"})
    assert r.status_code == 422 and r.json()["error"] == "corrupt_image", r.text


def test_refusing_the_lying_jpeg_costs_little_memory(tmp_path: Path) -> None:
    """Peak resident memory of a fresh process, before and after (Pillow's buffers are
    not Python allocations, so tracemalloc would not see them). Decoding the canvas in
    full took 108 MB more; the bound leaves room for the interpreter's own noise."""
    path = tmp_path / "liar.jpg"
    path.write_bytes(_claim_size(_jpeg(8, 8), 6000, 6000))
    code = (
        "import resource, sys\n"
        "from emostream.stream.media import MediaError, decode_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    decode_image(data)\nexcept MediaError as e:\n    print(e.code)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    verdict, grown_kib = out.stdout.split()
    assert verdict == "corrupt_image"
    assert int(grown_kib) < 20 * 1024, f"peak memory grew by {grown_kib} KiB"


@pytest.mark.parametrize("mode", ["1", "L", "RGB"])
def test_blank_pngs_and_jpegs_of_a_big_canvas_still_decode(mode: str) -> None:
    """The bound refuses only what cannot be a whole file: the most compressible real
    images (blank, 1-bit for PNG) of 3000x3000 pass it."""
    image = Image.new(mode, (3000, 3000))
    for fmt in ("PNG", "JPEG") if mode != "1" else ("PNG",):
        buf = io.BytesIO()
        image.save(buf, fmt, optimize=True)
        assert decode_image(buf.getvalue()).shape == (3000, 3000, 3)


# --- the client's looping file source ---------------------------------------------------


def _h264_clip(path: Path, frames: int, fps: int) -> None:
    """A short H.264 clip with B-frames (the decoder holds frames back), as most MP4s."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bf": "2"}
        for i in range(frames):
            image = np.full((48, 64, 3), i * 20, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)


def test_source_file_loop_plays_past_the_end_of_the_file(tmp_path: Path) -> None:
    frames, fps = 10, 20  # 0.5 s
    path = tmp_path / "clip.mp4"
    _h264_clip(path, frames, fps)

    async def run() -> list[int]:
        source = Source.file(str(path), loop=True)
        try:
            track = source.tracks[0]
            pts = []
            for _ in range(frames * 3 + 2):  # into the fourth pass
                frame = await asyncio.wait_for(track.recv(), GUARD_S)
                pts.append(frame.pts)
            return pts
        finally:
            source.stop()

    pts = asyncio.run(run())
    assert len(pts) == frames * 3 + 2
    assert all(b > a for a, b in itertools.pairwise(pts)), pts  # one timeline


def test_source_file_loop_plays_audio_as_the_opus_encoder_takes_it(tmp_path: Path) -> None:
    """A looped wav (a file's layout is "1 channels", which aiortc's encoders refuse) comes
    out as 20 ms of s16 stereo at 48 kHz, on one timeline across passes."""
    import wave

    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        t = np.arange(4800) / 16000  # 0.3 s
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())

    async def run() -> list[AudioFrame]:
        source = Source.file(str(path), loop=True)
        try:
            (track,) = source.tracks
            return [await asyncio.wait_for(track.recv(), GUARD_S) for _ in range(40)]  # 0.8 s
        finally:
            source.stop()

    frames = asyncio.run(run())
    assert {(f.format.name, f.layout.name, f.sample_rate) for f in frames} == {
        ("s16", "stereo", 48000)
    }
    assert all(f.samples == 960 for f in frames[:-1])
    pts = [f.pts for f in frames]
    assert all(b == a + 960 for a, b in itertools.pairwise(pts[:14])), pts  # first pass
    assert all(b > a for a, b in itertools.pairwise(pts)), pts  # one timeline over passes
