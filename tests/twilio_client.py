"""What the Twilio tests share: a real ``emostream serve`` (uvicorn, as ``stream/server.py``
configures it) in a thread on 127.0.0.1, and a client that speaks as Twilio does on a
Media Stream (numbered JSON messages, μ-law 8 kHz in 20 ms chunks).

Every wait is a bounded failure guard, never a speed check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import av
import httpx
import numpy as np
from av.audio.frame import AudioFrame
from threaded_server import threaded_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emostream import metrics
from emostream.settings import Settings
from emostream.stream.app import AppState
from emostream.stream.session_manager import SessionManager

GUARD_S = 60.0
STREAM = "MZ" + "0123456789abcdef" * 2
CALL = "CA" + "fedcba9876543210" * 2
ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
CHUNK = 160  # 20 ms at 8 kHz
#: real time is not under test: a loaded machine must not drop what it is slow with
PATIENT = {"deadline_ms": 600_000, "voice_deadline_ms": 600_000}


@dataclass
class Served:
    state: AppState
    loop: asyncio.AbstractEventLoop
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/twilio"

    @property
    def sessions(self) -> SessionManager:
        assert self.state.sessions is not None
        return self.state.sessions

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            base_url=self.http, trust_env=False, timeout=GUARD_S, headers=headers
        )

    async def tasks_of(self, session_id: str) -> list[str]:
        """The server loop's live tasks named after ``session_id``."""

        async def names() -> list[str]:
            return [t.get_name() for t in asyncio.all_tasks() if session_id in t.get_name()]

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(names(), self.loop))

    def task_count(self) -> int:
        """The server loop's live tasks, all of them (from outside any event loop)."""

        async def count() -> int:
            return len(asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(GUARD_S)

    def task_names(self) -> list[str]:
        """The server loop's live tasks by name and coroutine (from outside any event
        loop): what a leak report shows."""

        async def names() -> list[str]:
            return sorted(
                f"{t.get_name()} {t.get_coro().__qualname__}"  # type: ignore[union-attr]
                for t in asyncio.all_tasks()
                if t is not asyncio.current_task()  # (this one)
            )

        return asyncio.run_coroutine_threadsafe(names(), self.loop).result(GUARD_S)

    async def no_tasks_left(self, session_id: str) -> bool:
        """Whether every task of the session is gone (they are cancelled when it ends and
        finish a moment later; one that never does is a leak)."""
        async with asyncio.timeout(GUARD_S):
            while await self.tasks_of(session_id):
                await asyncio.sleep(0.05)
        return True


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[Served]:
    """``emostream serve`` with ``settings`` in a thread, stopped afterwards."""
    with threaded_server(settings, GUARD_S) as (state, loop):
        yield Served(state, loop, settings.server.port)


def protocol_errors(reason: str) -> float:
    """``emostream_protocol_errors_total{transport="twilio", reason}`` in this process."""
    return float(metrics.PROTOCOL_ERRORS.labels("twilio", reason)._value.get())


def mulaw(samples: np.ndarray) -> bytes:
    """Float samples (-1..1) at 8 kHz as G.711 μ-law, by FFmpeg's encoder."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
    frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = 8000
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate, codec.layout, codec.format = 8000, "mono", "s16"
    packets = [*codec.encode(frame), *codec.encode(None)]
    return b"".join(bytes(p) for p in packets)


@contextlib.asynccontextmanager
async def twilio(
    served: Served, headers: Mapping[str, str] | None = None, stream: str = STREAM
) -> AsyncIterator[Twilio]:
    """A Media Stream to ``served`` (loopback only, no proxy)."""
    async with connect(
        served.ws, additional_headers=dict(headers or {}), proxy=None, open_timeout=GUARD_S
    ) as ws:
        yield Twilio(ws, stream)


def start_body(
    stream: str = STREAM,
    tracks: tuple[str, ...] = ("inbound", "outbound"),
    custom: dict[str, str] | None = None,
    fmt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``start`` message's body as Twilio sends it."""
    return {
        "streamSid": stream,
        "accountSid": ACCOUNT,
        "callSid": CALL,
        "tracks": list(tracks),
        "mediaFormat": fmt or FORMAT,
        "customParameters": custom or {},
    }


def media_body(track: str, ms: int, ulaw: bytes) -> dict[str, Any]:
    """A ``media`` message's body: ``ulaw`` sent ``ms`` after the stream began."""
    payload = base64.b64encode(ulaw).decode()
    return {"track": track, "chunk": str(ms // 20 + 1), "timestamp": str(ms), "payload": payload}


class Twilio:
    """One stream as Twilio sends it: every message after ``connected`` numbered."""

    def __init__(self, ws: ClientConnection, stream: str = STREAM) -> None:
        self.ws = ws
        self.stream = stream
        self.seq = 0

    def message(self, event: str, body: Any = None, **top: Any) -> dict[str, Any]:
        """The next message (numbered, unless ``connected``); ``top`` adds or replaces
        top-level fields (``sequenceNumber="7"``)."""
        msg: dict[str, Any] = {"event": event}
        if event != "connected":
            self.seq += 1
            msg["sequenceNumber"] = str(self.seq)
            msg["streamSid"] = self.stream
        if body is not None:
            msg[event] = body
        msg.update(top)
        return msg

    async def send(self, event: str, body: dict[str, Any] | None = None, **top: Any) -> None:
        await self.ws.send(json.dumps(self.message(event, body, **top)))

    async def connected(self) -> None:
        await self.send("connected", protocol="Call", version="1.0.0")

    async def start(
        self,
        tracks: tuple[str, ...] = ("inbound", "outbound"),
        custom: dict[str, str] | None = None,
        fmt: dict[str, Any] | None = None,
    ) -> None:
        await self.send("start", start_body(self.stream, tracks, custom, fmt))

    async def media(self, track: str, ms: int, ulaw: bytes) -> None:
        await self.send("media", media_body(track, ms, ulaw))

    async def stop(self) -> None:
        await self.send("stop", {"accountSid": ACCOUNT, "callSid": CALL})

    async def closed(self) -> tuple[int | None, str | None]:
        """Read until the server closes: its close code and reason."""
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(GUARD_S):
                while True:
                    await self.ws.recv()
        return self.ws.close_code, self.ws.close_reason


async def wait_for_session(served: Served, session_id: str) -> None:
    async with asyncio.timeout(GUARD_S):
        while served.sessions.get(session_id) is None:
            await asyncio.sleep(0.02)


async def wait_until_ended(served: Served, session_id: str) -> None:
    """After ``stop`` a session lives on for its last results (``twilio.drain_s``)."""
    async with asyncio.timeout(GUARD_S):
        while served.sessions.get(session_id) is not None:
            await asyncio.sleep(0.02)


async def events(
    served: Served, session_id: str, ready: asyncio.Event, got: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The session's SSE messages, into ``got`` as they come, until its end marker;
    ``ready`` once subscribed."""
    async with (
        served.client() as client,
        client.stream("GET", f"/v1/sessions/{session_id}/events") as reply,
    ):
        assert reply.status_code == 200, reply.status_code
        async for line in reply.aiter_lines():
            if line.startswith(": session"):
                ready.set()
            elif line.startswith("event: end"):
                break
            elif line.startswith("data: "):
                got.append(json.loads(line[6:]))
    return got
