"""``GET /v1/twilio``: one Twilio Media Stream, from the upgrade to the end of its session.

The upgrade is checked first (``auth.py``): a refusal is an HTTP 403 and no socket. Then
each text frame is parsed and put in order (``messages.py``); ``start`` opens the session
(id: the ``streamSid``; ids: the call's and account's SIDs and every custom parameter)
with a track per analysed role, ``media`` feeds that track's 8 kHz frames (a role that is
not analysed is counted in seconds and never decoded), and ``stop`` closes the socket and
ends the session once its last windows have come back (at most ``twilio.drain_s``).

Whatever goes wrong is answered on this socket alone: a close code with a reason
(1008 policy, 1003 unsupported data, 1009 too big, 1011 our fault, 1013 no room), a count
in ``emostream_protocol_errors_total{transport="twilio"}``, and the session (if any)
ended, its tracks and tasks with it. A session ended from elsewhere (``DELETE``, the idle
reaper, shutdown) closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from emostream import metrics
from emostream.modalities import MediaTrack
from emostream.schema import ErrorBody
from emostream.settings import Settings
from emostream.stream.session import Session
from emostream.stream.session_manager import SessionExistsError, SessionLimitError, SessionManager
from emostream.stream.transports.frame_queue import FrameQueue
from emostream.stream.transports.twilio.auth import Admission, Refused
from emostream.stream.transports.twilio.messages import (
    INTERNAL,
    NORMAL,
    NOT_UTF8,
    POLICY,
    RATE,
    ROLES,
    TOO_BIG,
    TRY_LATER,
    Media,
    Message,
    ProtocolError,
    Sequence,
    Start,
    audio_frame,
    parse,
    payload_bytes,
)
from emostream.stream.twilio_config import TwilioConfig

log = logging.getLogger(__name__)

TRANSPORT = "twilio"
PATH = "/v1/twilio"
QUEUE_FRAMES = 500  # 10 s of 20 ms frames waiting for the track's reader
QUIET_S = 1.0  # after stop: no message for this long, all audio read = nothing in flight
#: Sockets the WebSocket layer closed for what the peer sent, before the stream read it:
#: a message over its 1 MiB cap, text that is not UTF-8 (so not JSON)
LAYER_CLOSED: dict[object, str] = {TOO_BIG: "too_big", NOT_UTF8: "not_json"}


def refused(reason: str) -> None:
    metrics.PROTOCOL_ERRORS.labels(TRANSPORT, reason).inc()


def short(text: str, limit: int = 120) -> str:
    """A close reason fits in 123 bytes of UTF-8 (RFC 6455 5.5)."""
    return text.encode()[:limit].decode("utf-8", errors="ignore")


class TwilioStream:
    """One accepted WebSocket: its messages in order, its session and tracks."""

    def __init__(
        self,
        ws: WebSocket,
        manager: SessionManager,
        config: TwilioConfig,
        owner: bytes | None,
    ) -> None:
        self.ws = ws
        self.manager = manager
        self.config = config
        self.owner = owner
        self.order = Sequence()
        self.session: Session | None = None
        self.tracks: dict[str, FrameQueue] = {}
        self.counts: Counter[str] = Counter()
        self.ended_elsewhere = False

    async def run(self) -> None:
        try:
            await self._receive()
        except ProtocolError as exc:
            refused(exc.reason)
            sid = self.session.id if self.session else "-"
            log.info("twilio stream %s refused: %s (%s)", sid, exc.reason, exc.detail)
            await self._close(exc.code, exc.detail)
        except Exception as exc:  # ours, not the peer's: this socket alone
            refused("internal")
            log.exception("twilio stream failed (%r)", exc)
            await self._close(INTERNAL, "internal error")
        finally:
            await self._finish()

    async def _receive(self) -> None:
        idle = self.config.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(idle):
                    message = await self.ws.receive()
            except TimeoutError:
                raise ProtocolError("idle", f"nothing received for {idle:g} s", POLICY) from None
            if message["type"] == "websocket.disconnect":
                self._disconnected(message.get("code"))
                return
            text = message.get("text")
            if text is None:
                raise ProtocolError("binary", "binary frame: Media Streams send JSON text")
            limit = self.config.max_message_bytes
            if len(text) > limit or len(text.encode()) > limit:
                raise ProtocolError("too_big", f"a message over {limit} bytes", TOO_BIG)
            msg = parse(text)
            self.order.check(msg)
            await self._handle(msg)
            if self.order.stopped:
                await self._close(NORMAL, "stream stopped")
                return

    def _disconnected(self, code: object) -> None:
        if self.ended_elsewhere or self.order.stopped:
            return
        reason = LAYER_CLOSED.get(code, "disconnected")  # else the peer hung up
        refused(reason)
        log.info("twilio stream %s: %s before stop", self.session and self.session.id, reason)

    async def _handle(self, msg: Message) -> None:
        self.counts[msg.event] += 1
        if msg.start is not None:
            await self._start(msg.start)
        elif msg.media is not None:
            self._media(msg.media)
        elif self.session is not None:
            self.session.touch()  # dtmf, mark, stop: the call is alive (digits not kept)

    async def _start(self, start: Start) -> None:
        m = self.manager
        try:
            session = await m.open(self.owner, transport=TRANSPORT, session_id=start.stream_sid)
        except SessionLimitError as exc:  # the server is full, or this credential's quota
            detail = short(str(exc), 100)
            if len(m.sessions) < m.max_sessions:  # session.max_sessions_per_owner
                raise ProtocolError("quota", detail, POLICY) from None
            raise ProtocolError("too_many_sessions", detail, TRY_LATER) from None
        except SessionExistsError:
            detail = "this streamSid is open already"
            raise ProtocolError("session_exists", detail, POLICY) from None
        self.session = session
        ids = session.call.ids
        ids.update(streamSid=start.stream_sid, callSid=start.call_sid)
        ids["accountSid"] = start.account_sid
        ids.update({f"param.{k}": v for k, v in start.custom.items()})
        session.describe = self._describe
        session.on_close(self._ended)
        for name in start.tracks:
            role = ROLES[name]
            if session.analyses(role):
                self.tracks[name] = queue = FrameQueue(name, limit=QUEUE_FRAMES)
                session.add_track(MediaTrack(name, "audio", queue, role))
        log.info("twilio stream %s: call %s, tracks %s", session.id, start.call_sid, start.tracks)

    def _media(self, media: Media) -> None:
        assert self.session is not None  # Sequence saw a start
        ulaw = payload_bytes(media.payload)
        queue = self.tracks.get(media.track)
        if queue is None:  # a role not analysed: its seconds, never its audio
            self.session.unanalysed_audio(ROLES[media.track], media.track, len(ulaw) / RATE)
        elif ulaw:
            queue.push(audio_frame(ulaw, media.timestamp_ms))

    def _describe(self) -> dict[str, object]:
        start = self.order.started
        return {
            "twilio": {
                "call_sid": start.call_sid if start else None,
                "tracks": list(start.tracks) if start else [],
                "analysed": sorted(self.tracks),
                "messages": dict(self.counts),
            }
        }

    async def _ended(self) -> None:
        """The session ended: by us, or from elsewhere (then the socket goes too)."""
        self.ended_elsewhere = True
        await self._close(NORMAL, "session ended")

    async def _close(self, code: int, reason: str) -> None:
        ws = self.ws
        if ws.application_state != WebSocketState.CONNECTED:
            return
        if ws.client_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await ws.close(code, short(reason))

    async def _finish(self) -> None:
        for queue in self.tracks.values():
            queue.end()
        session = self.session
        if session is None:
            return
        try:
            if self.order.stopped and not session.closed.is_set():
                await self._drain(session)
        finally:
            self.ended_elsewhere = True  # our own end: not a peer's fault
            await self.manager.end(session.id)

    async def _drain(self, session: Session) -> None:
        """Wait for the last windows' results: until nothing was sent for ``QUIET_S``
        with every frame read, the session ends, or ``drain_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_s
        last, since = session.messages_out, loop.time()
        while loop.time() < deadline and not session.closed.is_set():
            await asyncio.sleep(0.1)
            now = loop.time()
            if session.messages_out != last:
                last, since = session.messages_out, now
            elif now - since >= QUIET_S and all(q.empty for q in self.tracks.values()):
                return


async def refuse(ws: WebSocket, status: int, reason: str, detail: str) -> None:
    """Before accepting: an HTTP answer with the reason where the server can send one
    (uvicorn can), else a close (1008), which the server sends as a 403."""
    refused(reason)
    log.info("twilio upgrade refused: %s (%s)", reason, detail)
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        body = ErrorBody(error=reason, detail=detail).model_dump()
        await ws.send_denial_response(JSONResponse(body, status))
    else:
        await ws.close(POLICY, short(detail))


def router(settings: Settings, manager: Callable[[], SessionManager | None]) -> APIRouter:
    r = APIRouter()
    admission = Admission(settings.server, settings.twilio)

    @r.websocket(PATH)
    async def twilio_media_stream(websocket: WebSocket) -> None:
        """A Twilio Media Stream (TwiML ``<Stream url="wss://…/v1/twilio">``)."""
        try:
            owner = admission.check(websocket)
        except Refused as exc:
            await refuse(websocket, 403, exc.reason, exc.detail)
            return
        m = manager()
        if m is None:
            await refuse(websocket, 503, "unavailable", "models are not loaded; see /readyz")
            return
        await websocket.accept()
        await TwilioStream(websocket, m, settings.twilio, owner).run()

    return r
