"""WebRTC sessions (aiortc): one peer connection, its media readers and its results.

Video frames are converted to BGR and downscaled once (``max_side``) on arrival, in one
libswscale call on the manager's small ``frame-convert`` thread pool (``stream.frames``:
not on the event loop, which carries every peer's media), then submitted to the broker;
outcomes come back through ``IngestBroker.results(session)``, get track ids
(``SessionView``), and go out on the ``emotions`` data channel (when the client opened
one) and to every SSE subscriber.

Each audio track is named by its SDP ``mid`` (the ``track`` of its voice messages: a client
knows which of its transceivers is the agent and which the customer) and read by
``stream.voice_track``: 16 kHz windows, each speech window a voice job through the same
broker (windows are never superseded), each silent one a ``speech: false`` message sent at
once without a model. A server without voice says so once per session
(``voice_unavailable``) and reads the audio only to keep aiortc's receive queue short.

A session ends on DELETE, when its peer connection fails or closes, or after
``idle_timeout_s`` without a frame; ending it cancels its tasks, stops its tracks, closes
the connection and drops its queued jobs, so a vanished peer leaks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from pydantic import BaseModel, Field

from emostream import metrics
from emostream.broker.base import IngestBroker, UnknownSessionError
from emostream.fields import CommaList
from emostream.pipeline.jobs import FrameInfo, Job, VoiceInfo
from emostream.pipeline.messages import silence_message
from emostream.schema import ErrorMessage
from emostream.stream import remb
from emostream.stream.fanout import Fanout, Queue
from emostream.stream.frames import convert, converter
from emostream.stream.session_view import SessionView
from emostream.stream.voice_track import AudioWindows, TimedWindow, VoiceSupport, read_windows
from emostream.supervise import Supervised, supervise

log = logging.getLogger(__name__)

ACTIVE = metrics.ACTIVE_SESSIONS


#: What aiortc's SDP parser and answer builder raise on an offer they cannot read: they
#: index, unpack and look up without checking (``sdp.SessionDescription.parse``), and
#: ``OperationError`` for an m-section with no codec in common.
PARSER_ERRORS = (
    AttributeError,
    AssertionError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
    OperationError,
)


class SessionLimitError(RuntimeError):
    pass


class OfferRejectedError(ValueError):
    """aiortc could not apply the offer: a client error (400 ``bad_sdp``), not ours."""


class SessionConfig(BaseModel):
    """``EMOSTREAM_SESSION__*``: how WebRTC sessions are admitted, read and ended."""

    max_sessions: int = Field(default=32, ge=1, description="sessions open at once")
    idle_timeout_s: float = Field(default=10.0, gt=0, description="end a silent session")
    max_side: int = Field(default=640, ge=64, description="frames downscaled once on arrival")
    max_video_kbps: int = Field(
        default=600,
        ge=100,
        description="the REMB each video receiver announces: senders stay under it "
        "(ample for a face at 640 px) and still back off on loss (stream/remb.py)",
    )
    convert_threads: int = Field(
        default=2, ge=1, description="threads converting frames, shared by all sessions"
    )
    smoothing: float = Field(default=1.0, gt=0, le=1, description="EMA weight; 1 = raw")
    max_subscribers: int = Field(default=8, ge=1, description="SSE streams open per session")
    ice_servers: CommaList = Field(
        default_factory=list, description="STUN/TURN URLs; none by default (local only)"
    )


class Session:
    def __init__(
        self,
        broker: IngestBroker,
        config: SessionConfig,
        frames: ThreadPoolExecutor,
        owner: bytes | None = None,
        voice: VoiceSupport | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.owner = owner  # who created it (stream.auth); None on an open server
        self.secret = secrets.token_urlsafe(24)  # its session_token: read, follow, end it
        self.broker = broker
        self.config = config
        self.frames = frames  # the manager's frame-convert pool
        servers = [RTCIceServer(urls=u) for u in config.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.channel: RTCDataChannel | None = None
        self.view = SessionView(self.id, smoothing=config.smoothing)
        self.subscribers = Fanout(config.max_subscribers)
        self.started = self.last_activity = time.monotonic()
        self.frames_in = 0
        self.messages_out = 0
        self.closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._tracks: list[MediaStreamTrack] = []
        self._seq = 0  # frames
        self._voice_seq = 0  # speech windows, all tracks (face seq stays one per frame)
        self.voice = voice or VoiceSupport()
        self._voice_notice: ErrorMessage | None = None  # said once, when the channel opens

        @self.pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == "emotions":
                self.channel = channel
                if self._voice_notice is not None:
                    channel.send(self._voice_notice.to_json())

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tracks.append(track)
            if track.kind == "video":
                self._spawn(self._read_video(track), f"{self.id}-video")
                return
            name = self._track_name(track)
            self._spawn(self._read_audio(track, name), f"{self.id}-audio-{name}")

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: connection %s", self.id, self.pc.connectionState)
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer; the answer comes back with all ICE candidates (no trickle).

        Raises :class:`OfferRejectedError` when aiortc cannot read or answer the offer.
        """
        await self.broker.open_session(self.id)
        self._spawn(self._send_results(), f"{self.id}-results")
        try:
            offer = RTCSessionDescription(sdp=offer_sdp, type="offer")
            await self.pc.setRemoteDescription(offer)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except PARSER_ERRORS as exc:
            raise OfferRejectedError(_why(exc)) from exc
        except RuntimeError as exc:  # a StopIteration in a coroutine (``a=fmtp`` lookup)
            if not isinstance(exc.__cause__, StopIteration):
                raise
            raise OfferRejectedError(_why(exc)) from exc
        for transceiver in self.pc.getTransceivers():
            remb.cap_remb(transceiver.receiver, self.config.max_video_kbps)
        return self.pc.localDescription.sdp

    async def _read_video(self, track: MediaStreamTrack) -> None:
        max_side = self.config.max_side
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, VideoFrame):  # a video track yields only video frames
                continue
            t0 = time.monotonic()
            self.last_activity = t0
            w, h = frame.width, frame.height
            image, scale = await convert(self.frames, frame, max_side)
            pts = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0  # type: ignore[operator]
            # arrival to converted image, the wait for a pool thread included
            metrics.STAGE_LATENCY.labels("decode", "face").observe(time.monotonic() - t0)
            self._seq += 1
            self.frames_in += 1
            if self.closed.is_set():
                return
            job = Job(self.id, self._seq, pts, image, FrameInfo(w, h, scale), created=t0)
            try:
                await self.broker.submit(job)
            except UnknownSessionError:  # the session ended between the check and the submit
                return

    def _track_name(self, track: MediaStreamTrack) -> str:
        """The track's SDP ``mid``: stable for the session and known to the client."""
        for t in self.pc.getTransceivers():
            if t.receiver.track is track and t.mid is not None:
                return t.mid
        return track.id

    def _touch(self) -> None:
        self.last_activity = time.monotonic()

    async def _read_audio(self, track: MediaStreamTrack, name: str) -> None:
        make = self.voice.windower
        if make is None:
            if self._voice_notice is None:
                notice = ErrorMessage(
                    session=self.id, code="voice_unavailable", detail=self.voice.problem
                )
                self._voice_notice = notice
                self._send(notice.to_json())
            await self._discard(track)
            return
        windows = AudioWindows(make())

        async def submit(timed: list[TimedWindow]) -> None:
            for t in timed:
                await self._voice_window(name, t)

        try:
            await read_windows(track, windows, submit, self._touch, time.monotonic)
        except Exception as exc:  # this track's audio only: the session and others go on
            log.warning("session %s: audio track %s failed (%r); reading on", self.id, name, exc)
            await self._discard(track)

    async def _voice_window(self, name: str, timed: TimedWindow) -> None:
        """A speech window becomes a voice job; a silent one its message, at once."""
        w = timed.window
        info = VoiceInfo(track=name, start=w.start, end=w.end)
        if self.closed.is_set():
            return
        metrics.VOICE_WINDOWS.labels("true" if w.speech else "false").inc()
        if not w.speech:
            latency = time.monotonic() - timed.ended
            self._send(silence_message(info, latency_s=latency, session=self.id).to_json())
            return
        self._voice_seq += 1
        job = Job(self.id, self._voice_seq, w.start, w.samples, info, created=timed.ended)
        with contextlib.suppress(UnknownSessionError):  # ended between check and submit
            await self.broker.submit(job)

    async def _discard(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self._touch()

    async def _send_results(self) -> None:
        async for event in self.broker.results(self.id):
            msg = self.view.message(event)
            if msg is not None:
                self._send(msg.to_json())

    def _send(self, text: str) -> None:
        """To the data channel (when open) and every SSE subscriber."""
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        self.subscribers.publish(text)  # a slow reader loses the oldest, not the newest
        self.messages_out += 1

    def subscribe(self) -> Queue:
        """A queue of this session's messages for one SSE stream (``SubscriberLimitError``
        beyond ``max_subscribers``)."""
        return self.subscribers.subscribe()

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.subscribers.close()  # first: the end marker must not wait on what may fail below
        for track in self._tracks:
            track.stop()
        await self.broker.close_session(self.id)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await close_peer(self.pc, self.id)


def _why(exc: Exception) -> str:
    return f"the offer could not be applied: {str(exc) or type(exc).__name__}"


async def close_peer(pc: RTCPeerConnection, name: str) -> None:
    """``pc.close()``, which never raises: after a half-applied offer it can.

    aiortc's ``close`` stops the senders, the SCTP transport, then every DTLS and ICE
    transport; an offer that failed half-way can leave the SCTP transport without a DTLS
    transport, so ``close`` raises before it reaches the others. Their sockets are then
    closed here, one by one, so none is left open.
    """
    try:
        await pc.close()
        return
    except Exception as exc:  # clean-up of a broken peer: log it, then close what is left
        log.warning("session %s: closing its peer connection failed (%r)", name, exc)
    dtls = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls.append(pc.sctp.transport)
    for transport in dtls:
        if transport is None:
            continue
        for stop in (transport.stop, transport.transport.stop):
            try:
                await stop()
            except Exception as exc:  # keep going: the next transport's socket matters
                log.warning("session %s: stopping a transport failed (%r)", name, exc)


class SessionManager:
    """All sessions of this ingest node, with the concurrency limit and the idle reaper."""

    def __init__(
        self, broker: IngestBroker, config: SessionConfig, voice: VoiceSupport | None = None
    ) -> None:
        self.broker = broker
        self.config = config
        self.voice = voice
        self.max_sessions = config.max_sessions
        self.sessions: dict[str, Session] = {}
        self._reaper: Supervised | None = None
        self._frames = converter(config.convert_threads)  # threads start on first use

    def start(self) -> None:
        """Start the idle reaper, supervised (restarted if ending a session ever raises)."""
        self._reaper = supervise("reaper", self._reap)

    @property
    def tasks(self) -> list[Supervised]:
        return [] if self._reaper is None else [self._reaper]

    async def create(self, offer_sdp: str, owner: bytes | None = None) -> Session:
        if len(self.sessions) >= self.max_sessions:
            raise SessionLimitError(
                f"{len(self.sessions)} sessions open; this server allows {self.max_sessions}"
            )
        session = Session(self.broker, self.config, self._frames, owner, self.voice)
        self.sessions[session.id] = session
        ACTIVE.set(len(self.sessions))
        try:
            await session.answer(offer_sdp)
        except BaseException:
            await self.end(session.id)
            raise
        return session

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def end(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        ACTIVE.set(len(self.sessions))
        if session is None:
            return False
        await session.close()
        summary = session.view.summary()
        log.info(
            "session %s ended after %.0f s: %d frames in, %d messages out, dropped %s, "
            "end-to-end latency %s, classes %s",
            session_id,
            time.monotonic() - session.started,
            session.frames_in,
            session.messages_out,
            summary["dropped"],
            summary["latency_ms"],
            summary["classes"],
        )
        return True

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.idle_timeout_s / 4))
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                idle = now - s.last_activity > self.config.idle_timeout_s
                if s.closed.is_set() or idle:
                    await self.end(sid)

    async def close(self) -> None:
        if self._reaper is not None:
            await self._reaper.stop()
        for sid in list(self.sessions):
            await self.end(sid)
        self._frames.shutdown(wait=False, cancel_futures=True)  # a conversion is < 1 ms
