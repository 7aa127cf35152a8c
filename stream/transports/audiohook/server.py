"""One AudioHook connection: the protocol's state machine, from ``open`` to ``closed``.

The client (Genesys Cloud) opens the session with ``open``, offering media formats; we
take the first we can read (PCMU or L16 at 8 kHz, channels ``external`` and/or
``internal``), open an emostream session named by the ``audiohook-session-id`` header,
add a track per analysed channel and answer ``opened``. Audio then comes as binary
messages until the client pauses (``paused`` ... ``resumed``), reports audio it dropped
(``discarded``) or ends the call with ``close``: the tracks end, the last windows get up
to ``close_drain_s`` to be scored, the session ends and we answer ``closed``. ``ping``
gets ``pong``, ``update`` gets ``updated``. An ``open`` of the null conversation is
Genesys' connection probe: ``opened``, then ``closed`` on its ``close``, and no session.

Anything else is refused the same way, never by raising: text that is not JSON or not a
client message, an unknown type, a ``seq`` that skips or repeats, a ``serverseq`` we never
sent, another session's ``id``, audio before ``open`` or while paused, a frame that does
not hold whole samples, a message over ``max_frame_bytes``, no offered format we read, a
full server, a session id already open, a socket silent for ``idle_timeout_s``. Each gets
``disconnect`` (reason ``error``, an ``info`` saying why), is counted once in
``emostream_protocol_errors_total{transport="audiohook"}`` and ends this connection's
session; the client then closes (``close`` -> ``closed``), or the socket is closed after
another ``idle_timeout_s``. A session ended on our side (``DELETE``, the idle reaper,
shutdown) sends ``disconnect`` with reason ``completed``. The connection creates no task
of its own: it lives in the WebSocket's handler and leaves nothing behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from emostream import metrics
from emostream.stream.audiohook_config import AudioHookConfig
from emostream.stream.session import Session
from emostream.stream.session_manager import SessionExistsError, SessionLimitError, SessionManager
from emostream.stream.transports.audiohook import codec
from emostream.stream.transports.audiohook.audio import CallAudio
from emostream.stream.transports.audiohook.messages import (
    NULL_UUID,
    GapParameters,
    Media,
    OpenParameters,
    Parsed,
    ProtocolError,
    ServerType,
    UpdateParameters,
    duration,
    parse,
    server_message,
)

log = logging.getLogger(__name__)

TRANSPORT = "audiohook"
CHANNELS = ("external", "internal")
QUIET_S = 0.5  # after the tracks ended, a pause this long in the results: all are in
CLOSED_WAIT_S = 2.0  # after ``closed``, how long the client gets to close the socket
TICK_S = 1.0  # the receive loop wakes at least this often (see ``_tick``)
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL = 1000, 1008, 1009, 1011
#: Sockets the WebSocket layer closed for what the client sent, before this connection read
#: it (the disconnect's code): the reason and info counted, not a client that hung up
LAYER_CLOSED: dict[object, tuple[str, str]] = {
    CLOSE_TOO_BIG: ("too_large", "a message over the server's WebSocket limit"),
    1007: ("bad_json", "a text message that is not UTF-8"),
}


class Phase(enum.Enum):
    CONNECTED = "connected"  # before ``open``
    OPEN = "open"
    PAUSED = "paused"
    DISCONNECTING = "disconnecting"  # we sent ``disconnect``: only ``close`` is read
    CLOSED = "closed"


def select_media(offered: list[Media]) -> Media | None:
    """The first offered format we read (Genesys lists its preference first)."""
    for media in offered:
        channels = media.channels
        if (
            media.type == "audio"
            and media.format in codec.FORMATS
            and media.rate == codec.RATE
            and 1 <= len(channels) <= 2
            and len(set(channels)) == len(channels)
            and all(c in CHANNELS for c in channels)
        ):
            return media
    return None


@dataclass(frozen=True)
class Peer:
    """What the upgrade request said: who connects, for which session."""

    session_id: str
    api_key: str
    organization_id: str | None
    correlation_id: str | None


class Connection:
    """One accepted WebSocket speaking AudioHook; :meth:`run` until it ends."""

    def __init__(
        self,
        ws: WebSocket,
        peer: Peer,
        config: AudioHookConfig,
        manager: Callable[[], SessionManager | None],
        owner: bytes | None,
    ) -> None:
        self.ws = ws
        self.peer = peer
        self.config = config
        self.manager = manager
        self.owner = owner
        self.phase = Phase.CONNECTED
        self.seq = 0  # the last server seq sent
        self.clientseq = 0  # the last client seq processed
        self.session: Session | None = None
        self.audio: CallAudio | None = None
        self.refused: str | None = None  # the reason counted for this connection
        self.close_code = CLOSE_NORMAL
        self.last_message = time.monotonic()  # the session's last message out

    @property
    def id(self) -> str:
        return self.peer.session_id

    async def run(self) -> None:
        try:
            try:
                await self._loop()
            except Exception:  # a bug of ours: the client hears of it, the server goes on
                log.exception("audiohook %s: the connection failed", self.id)
                self.close_code = CLOSE_INTERNAL
                await self.fail("internal_error", "the server failed; the call was ended")
                await self._loop()  # for the client's close
        finally:
            await self._end_session(drain=False)
            await self._close_socket()

    # -- receiving ----------------------------------------------------------------------

    async def _loop(self) -> None:
        last = time.monotonic()  # when the client last sent anything
        while True:
            wait = CLOSED_WAIT_S if self.phase is Phase.CLOSED else self.config.idle_timeout_s
            left = last + wait - time.monotonic()
            tick = self._tick()
            try:
                async with asyncio.timeout(min(max(left, 0.0), tick)):
                    msg = await self.ws.receive()
            except TimeoutError:
                if self.session is not None:  # this connection's own idle clock decides,
                    self.session.touch()  # not the reaper's: a paused call may be quiet
                if left > tick:
                    continue
                if self.phase in (Phase.DISCONNECTING, Phase.CLOSED):
                    return  # told, and no close came (or closed, and the socket stays)
                await self.fail("idle", f"nothing was received for {wait:g} s")
                last = time.monotonic()
                continue
            last = time.monotonic()
            if msg["type"] == "websocket.disconnect":
                if self.phase in (Phase.CONNECTED, Phase.OPEN, Phase.PAUSED):
                    gone = ("client_gone", "the socket closed without a close transaction")
                    self._count(*LAYER_CLOSED.get(msg.get("code"), gone))
                return
            if msg.get("text") is not None:
                await self._text(msg["text"])
            elif msg.get("bytes") is not None:
                await self._binary(msg["bytes"])

    def _tick(self) -> float:
        """How often the loop wakes: well within the session reaper's idle timeout."""
        if self.session is None:
            return TICK_S
        return min(TICK_S, self.session.config.idle_timeout_s / 4)

    async def _text(self, text: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        if len(text) > self.config.max_frame_bytes:
            self.close_code = CLOSE_TOO_BIG
            await self.fail("too_large", f"a text message over {self.config.max_frame_bytes} bytes")
            return
        try:
            parsed = parse(text)
        except ProtocolError as exc:
            if self.phase is not Phase.DISCONNECTING:
                await self.fail(exc.reason, exc.info)
            return
        m = parsed.message
        if self.phase is Phase.DISCONNECTING:  # whatever else it sends, we wait for close
            self.clientseq = max(self.clientseq, m.seq)
            if m.type == "close":
                await self._closed()
            return
        if m.seq != self.clientseq + 1:
            await self.fail(
                "bad_seq", f"seq {m.seq} after {self.clientseq}: {self.clientseq + 1} was due"
            )
            return
        self.clientseq = m.seq
        if m.serverseq > self.seq:
            await self.fail(
                "bad_serverseq", f"serverseq {m.serverseq}, but the last seq sent is {self.seq}"
            )
        elif m.id != self.id:
            await self.fail(
                "wrong_id", "the message's id is not this connection's audiohook-session-id"
            )
        else:
            await self._dispatch(parsed)

    async def _dispatch(self, parsed: Parsed) -> None:
        kind, params = parsed.type, parsed.parameters
        if kind == "open":
            assert isinstance(params, OpenParameters)
            await self._open(params)
        elif kind == "close":
            await self._end_session(drain=True)
            await self._closed()
        elif kind == "ping":
            await self._send("pong", {})
        elif kind == "update":
            assert isinstance(params, UpdateParameters)
            if self.session is not None and params.language:
                self.session.call.ids["language"] = params.language
            await self._send("updated", {})
        elif kind == "error":
            log.warning("audiohook %s: the client reports an error: %.200s", self.id, params)
        elif self.phase is Phase.CONNECTED:
            await self.fail("not_open", f"{kind!r} before the session is open")
        elif kind == "paused":
            self.phase = Phase.PAUSED
        else:  # resumed, discarded: audio that will never come
            assert isinstance(params, GapParameters) and self.audio is not None
            self.audio.gap(params.discarded)
            if kind == "resumed":
                self.phase = Phase.OPEN

    async def _binary(self, data: bytes) -> None:
        if self.phase in (Phase.DISCONNECTING, Phase.CLOSED):
            return  # in flight when we said disconnect
        if len(data) > self.config.max_frame_bytes:
            self.close_code = CLOSE_TOO_BIG
            await self.fail("too_large", f"an audio frame over {self.config.max_frame_bytes} bytes")
        elif self.phase is Phase.CONNECTED or self.audio is None:
            await self.fail("audio_before_open", "audio before the session was opened")
        elif self.phase is Phase.PAUSED:
            await self.fail("audio_while_paused", "audio while the stream is paused")
        else:
            try:
                self.audio.feed(data)
            except ValueError as exc:
                await self.fail("bad_frame", str(exc))

    # -- the open and close transactions --------------------------------------------------

    async def _open(self, params: OpenParameters) -> None:
        if self.phase is not Phase.CONNECTED:
            await self.fail("unexpected_open", "the session is open already")
            return
        media = select_media(params.media)
        if media is None:
            offered = ", ".join(f"{m.format}/{m.rate}/{'+'.join(m.channels)}" for m in params.media)
            await self.fail(
                "unsupported_media",
                f"none of the offered media ({offered or 'none'}) is one we take: PCMU or L16 "
                "at 8000 Hz, channels external and/or internal",
            )
            return
        fmt: codec.Format = "PCMU" if media.format == "PCMU" else "L16"
        if params.conversationId == NULL_UUID:  # the connection probe: no session
            self.audio = CallAudio(None, fmt, media.channels)
            log.info("audiohook %s: connection probe", self.id)
        elif not await self._start_session(params, fmt, media.channels):
            return
        opened: dict[str, Any] = {"media": [media.wire()], "startPaused": False}
        if params.supportedLanguages:
            opened["supportedLanguages"] = []  # we transcribe nothing
        self.phase = Phase.OPEN
        await self._send("opened", opened)

    async def _start_session(
        self, params: OpenParameters, fmt: codec.Format, channels: list[str]
    ) -> bool:
        org = self.peer.organization_id
        if org is not None and org != params.organizationId:
            await self.fail("wrong_organization", "organizationId is not the header's")
            return False
        manager = self.manager()
        if manager is None:
            await self.fail("unavailable", "the server is still loading its models")
            return False
        try:
            session = await manager.open(self.owner, transport=TRANSPORT, session_id=self.id)
        except SessionExistsError:
            await self.fail("duplicate_session", f"session {self.id} is open already")
            return False
        except SessionLimitError as exc:  # the server is full, or the owner's quota
            full = len(manager.sessions) >= manager.max_sessions  # (session.max_sessions_per_owner)
            await self.fail("server_full" if full else "quota", str(exc))
            return False
        self.session = session
        session.call.ids.update(_ids(params, self.peer))
        session.on_close(self._ended_elsewhere)
        session.add_output(self._on_message)
        session.describe = self._describe
        self.audio = CallAudio(session, fmt, channels)
        analysed = [t.name for t in self.audio.tracks.values()]
        log.info(
            "audiohook %s: open, %s %s, analysing %s",
            self.id,
            fmt,
            "+".join(channels),
            "+".join(analysed) or "nothing",
        )
        return True

    async def _closed(self) -> None:
        await self._send("closed", {})
        self.phase = Phase.CLOSED

    async def _end_session(self, *, drain: bool) -> None:
        """End our session: with ``drain`` (the client's close) its last windows are
        scored first, for at most ``close_drain_s``."""
        session, audio = self.session, self.audio
        self.session = None  # from here its closing is ours, not news for the client
        if audio is not None:
            audio.end()
        if session is None:
            return
        if drain and audio is not None:
            deadline = time.monotonic() + self.config.close_drain_s
            if await audio.ended(self.config.close_drain_s):
                self.last_message = time.monotonic()  # the readers' last windows are to come
                while (now := time.monotonic()) < deadline and now - self.last_message < QUIET_S:
                    await asyncio.sleep(min(QUIET_S, deadline - now))
        manager = self.manager()
        if manager is not None:
            await manager.end(session.id)
        else:
            await session.close()

    async def _ended_elsewhere(self) -> None:
        """The session ended on our side (DELETE, the idle reaper, shutdown)."""
        if self.session is None:
            return  # we ended it
        self.session = None
        if self.audio is not None:
            self.audio.end()
        if self.phase in (Phase.CONNECTED, Phase.OPEN, Phase.PAUSED):
            self.phase = Phase.DISCONNECTING
            info = "the session was ended on the server"
            await self._send("disconnect", {"reason": "completed", "info": info})

    # -- sending --------------------------------------------------------------------------

    async def fail(self, reason: str, info: str) -> None:
        """Refuse: count it, say ``disconnect``, end the session; wait for ``close``."""
        self._count(reason, info)
        if self.phase in (Phase.DISCONNECTING, Phase.CLOSED):
            return
        self.phase = Phase.DISCONNECTING
        if self.close_code == CLOSE_NORMAL:
            self.close_code = CLOSE_POLICY
        await self._send("disconnect", {"reason": "error", "info": info})
        await self._end_session(drain=False)

    def _count(self, reason: str, info: str) -> None:
        if self.refused is None:
            self.refused = reason
            metrics.PROTOCOL_ERRORS.labels(TRANSPORT, reason).inc()
            log.info("audiohook %s: refused (%s): %s", self.id, reason, info)

    async def _send(self, kind: ServerType, parameters: dict[str, Any]) -> None:
        self.seq += 1
        text = server_message(self.id, self.seq, self.clientseq, kind, parameters)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.ws.send_text(text)  # a client gone meanwhile: no one left to tell

    def _on_message(self, text: str) -> None:
        self.last_message = time.monotonic()

    def _describe(self) -> dict[str, object]:
        audio = self.audio
        return {
            "audiohook": self.phase.value,
            "format": audio.format if audio else None,
            "channels": audio.channels if audio else [],
            "position_s": round(audio.seconds, 3) if audio else 0.0,
            "position": duration(audio.seconds) if audio else duration(0),
        }

    async def _close_socket(self) -> None:
        ws = self.ws
        if (
            ws.application_state is WebSocketState.CONNECTED
            and ws.client_state is WebSocketState.CONNECTED
        ):
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await ws.close(self.close_code)


def _ids(params: OpenParameters, peer: Peer) -> dict[str, str]:
    """The platform's ids for the call's summary (only those it sent)."""
    p = params.participant
    ids = {
        "conversationId": params.conversationId,
        "organizationId": params.organizationId,
        "correlationId": peer.correlation_id or "",
        "participantId": p.id,
        "ani": p.ani,
        "aniName": p.aniName,
        "dnis": p.dnis,
        "language": params.language or "",
    }
    return {k: v for k, v in ids.items() if v}
