"""A Genesys-like AudioHook client for the tests: it follows the protocol (sequence
numbers, position, the open and close transactions, signed upgrade requests) and can
break any rule on purpose.

The signature is written out here by hand, as RFC 9421 and the AudioHook documentation
describe it, not with the server's own structured-field code, so the two check each other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from threaded_server import threaded_server
from websockets.asyncio.client import ClientConnection, connect

from emostream import metrics
from emostream.settings import Settings
from emostream.stream.app import AppState
from emostream.stream.transports.audiohook import codec

GUARD_S = 30.0  # the longest a test waits for one server message
ORG = "d7934305-0972-4844-938e-9060eef73d05"
COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
MONO = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}


def signed_headers(
    headers: dict[str, str],
    secret: bytes,
    target: str,
    authority: str,
    *,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """``headers`` plus Signature-Input and Signature over the six AudioHook components."""
    created = int(time.time()) if created is None else created
    nonce = nonce or base64.b64encode(uuid.uuid4().bytes + b"\0\0").decode()
    values = {
        "@request-target": target,
        "@authority": authority,
        **{k.lower(): v for k, v in headers.items()},
    }
    covered = " ".join(f'"{c}"' for c in COMPONENTS)
    params = (
        f'({covered});keyid="{headers["X-API-KEY"]}";nonce="{nonce}";alg="hmac-sha256";'
        f"created={created};expires={created + 30}"
    )
    lines = [f'"{c}": {values[c]}' for c in COMPONENTS] + [f'"@signature-params": {params}']
    digest = hmac.new(secret, "\n".join(lines).encode(), hashlib.sha256).digest()
    return {
        **headers,
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{base64.b64encode(digest).decode()}:",
    }


def upgrade_headers(
    port: int,
    api_key: str,
    secret: bytes = b"",
    session_id: str | None = None,
    **signature: Any,
) -> dict[str, str]:
    headers = {
        "Audiohook-Organization-Id": ORG,
        "Audiohook-Session-Id": session_id or str(uuid.uuid4()),
        "Audiohook-Correlation-Id": str(uuid.uuid4()),
        "X-API-KEY": api_key,
    }
    if secret:
        headers = signed_headers(headers, secret, "/v1/audiohook", f"127.0.0.1:{port}", **signature)
    return headers


def open_parameters(
    media: list[dict[str, Any]] | None = None, conversation: str | None = None
) -> dict[str, Any]:
    """The parameters of an ``open`` as Genesys sends them (``media``: stereo PCMU)."""
    return {
        "organizationId": ORG,
        "conversationId": conversation or str(uuid.uuid4()),
        "participant": {
            "id": str(uuid.uuid4()),
            "ani": "+15550100",
            "aniName": "A",
            "dnis": "+15550199",
        },
        "media": [STEREO] if media is None else media,
        "language": "en-US",
    }


class Client:
    """One AudioHook connection, client side."""

    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self.ws = ws
        self.id = session_id
        self.seq = 0
        self.serverseq = 0
        self.samples = 0  # per channel, for ``position``
        self.channels = 2

    def message(self, type_: str, parameters: Any, **override: Any) -> dict[str, Any]:
        """The next client message (it takes the next ``seq``); ``override`` replaces any
        envelope field (``seq=7``)."""
        self.seq += 1
        message = {
            "version": "2",
            "id": self.id,
            "type": type_,
            "seq": self.seq,
            "serverseq": self.serverseq,
            "position": f"PT{self.samples / 8000:.3f}S",
            "parameters": parameters,
        }
        message.update(override)
        return message

    async def send(self, type_: str, parameters: dict[str, Any], **override: Any) -> None:
        """A client message; ``override`` replaces any envelope field (``seq=7``)."""
        await self.ws.send(json.dumps(self.message(type_, parameters, **override)))

    async def recv(self) -> dict[str, Any]:
        """The next server message (its seq must follow the last one's)."""
        async with _guard():
            text = await self.ws.recv()
        assert isinstance(text, str), "the server sends text only"
        message: dict[str, Any] = json.loads(text)
        assert message["version"] == "2" and message["id"] == self.id, message
        assert message["seq"] == self.serverseq + 1, message
        self.serverseq = message["seq"]
        return message

    async def expect(self, type_: str) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == type_, message
        return message

    async def open(
        self, media: list[dict[str, Any]] | None = None, conversation: str | None = None
    ) -> dict[str, Any]:
        await self.send("open", open_parameters(media, conversation))
        opened = await self.expect("opened")
        if opened["parameters"]["media"]:
            self.channels = len(opened["parameters"]["media"][0]["channels"])
        return opened

    async def audio(self, data: bytes) -> None:
        await self.ws.send(data)
        self.samples += len(data) // self.channels

    async def stream(self, pcm: np.ndarray, frame_s: float = 0.1, pace_s: float = 0.01) -> None:
        """``(samples, channels)`` int16 as PCMU frames of ``frame_s``, ``pace_s`` apart."""
        step = int(8000 * frame_s)
        for start in range(0, len(pcm), step):
            await self.audio(codec.encode(pcm[start : start + step], "PCMU"))
            await asyncio.sleep(pace_s)

    async def close(self) -> dict[str, Any]:
        """The close transaction; skips the results-bearing messages that may precede it."""
        await self.send("close", {"reason": "end"})
        return await self.expect("closed")

    async def refused(self) -> str:
        """The server's ``disconnect`` (reason error): its info; then the close transaction,
        as Genesys does it."""
        message = await self.expect("disconnect")
        assert message["parameters"]["reason"] == "error", message
        info: str = message["parameters"]["info"]
        assert info.strip()
        await self.close()
        return info


@asynccontextmanager
async def session(
    port: int,
    api_key: str,
    secret: bytes = b"",
    session_id: str | None = None,
    **signature: Any,
) -> AsyncIterator[Client]:
    """A connected client (not yet open)."""
    headers = upgrade_headers(port, api_key, secret, session_id, **signature)
    async with connect(
        f"ws://127.0.0.1:{port}/v1/audiohook",
        additional_headers=headers,
        open_timeout=GUARD_S,
        max_size=2**20,
        proxy=None,  # loopback only, whatever the environment says
    ) as ws:
        yield Client(ws, headers["Audiohook-Session-Id"])


def _guard() -> Any:
    return asyncio.timeout(GUARD_S)


def refusals(reason: str) -> float:
    """How many AudioHook refusals of ``reason`` this process counted."""
    value: float = metrics.PROTOCOL_ERRORS.labels("audiohook", reason)._value.get()
    return value


# --- a real server (``emostream serve``'s uvicorn configuration) in a thread ----------------


@dataclass
class Running:
    state: AppState
    port: int
    loop: asyncio.AbstractEventLoop

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tasks(self) -> int:
        """The server loop's live tasks (read from the test's thread)."""
        while True:
            with contextlib.suppress(RuntimeError):  # the set changed while read: again
                return len(asyncio.all_tasks(self.loop))

    def task_names(self) -> list[str]:
        while True:
            with contextlib.suppress(RuntimeError):
                return sorted(
                    f"{t.get_name()} {t.get_coro().__qualname__}"  # type: ignore[union-attr]
                    for t in asyncio.all_tasks(self.loop)
                )

    def sessions(self) -> int:
        return len(self.state.sessions.sessions) if self.state.sessions else 0


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[Running]:
    with threaded_server(settings, 120.0) as (state, loop):
        yield Running(state, settings.server.port, loop)


async def eventually(check: Any, what: str, guard_s: float = GUARD_S) -> None:
    """Wait until ``check()`` is true (a failure guard, not a timing assertion)."""
    deadline = time.monotonic() + guard_s
    while not check():
        assert time.monotonic() < deadline, f"still not so after {guard_s:g} s: {what}"
        await asyncio.sleep(0.05)
