"""The WebRTC transport: one aiortc peer connection feeding one session.

The offer is applied and answered with every ICE candidate (no trickle); each remote track
becomes a session track named by its SDP ``mid`` (the ``track`` of its voice messages: a
client knows which of its transceivers is the agent and which the customer), with the
role the client gave that ``mid`` (``unknown`` otherwise); the ``emotions`` data channel,
once the client opens it, is one more output of the session's messages. Video receivers
announce a fixed REMB (``remb.py``). The session ends when the connection fails or
closes; ending it stops the tracks and closes the connection, every socket included.

This package is the only part of the server that imports aiortc.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

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

from emostream.modalities import MediaTrack
from emostream.modalities.base import Role, TrackKind
from emostream.stream.session import Session
from emostream.stream.session_manager import SessionManager
from emostream.stream.transports.webrtc import remb

log = logging.getLogger(__name__)

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


class OfferRejectedError(ValueError):
    """aiortc could not apply the offer: a client error (400 ``bad_sdp``), not ours."""


class Frames:
    """A remote track's frames as an async iterator that ends with the track.

    Not a generator: a reader that gives up half-way (a failed windower) can go on
    draining the same track.
    """

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track

    def __aiter__(self) -> Frames:
        return self

    async def __anext__(self) -> object:
        try:
            return await self.track.recv()
        except MediaStreamError:
            raise StopAsyncIteration from None


@dataclass
class Peer:
    session: Session
    pc: RTCPeerConnection

    @property
    def answer(self) -> str:
        return self.pc.localDescription.sdp


async def open_peer(
    manager: SessionManager,
    offer_sdp: str,
    owner: bytes | None = None,
    roles: Mapping[str, Role] | None = None,
) -> Peer:
    """A new session fed by a peer connection answering ``offer_sdp``.

    Raises ``SessionLimitError`` when the server is full and :class:`OfferRejectedError`
    when aiortc cannot read or answer the offer (the half-made session is ended).
    """
    session = await manager.open(owner, transport="webrtc")
    servers = [RTCIceServer(urls=u) for u in manager.config.ice_servers]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    peer = Peer(session, pc)
    _wire(peer, roles or {})
    try:
        await _answer(pc, offer_sdp)
    except BaseException:
        await manager.end(session.id)
        raise
    for transceiver in pc.getTransceivers():
        remb.cap_remb(transceiver.receiver, manager.config.max_video_kbps)
    return peer


def _wire(peer: Peer, roles: Mapping[str, Role]) -> None:
    session, pc = peer.session, peer.pc
    channels: list[RTCDataChannel] = []
    tracks: list[MediaStreamTrack] = []

    def to_channel(text: str) -> None:
        for channel in channels:
            if channel.readyState == "open":
                channel.send(text)

    session.add_output(to_channel)
    session.describe = lambda: {"connection": pc.connectionState, "data_channel": bool(channels)}

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label == "emotions":
            channels[:] = [channel]
            for notice in session.notices:  # said before the channel opened
                channel.send(notice.to_json())

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tracks.append(track)
        name = _mid(pc, track)
        kind: TrackKind = "video" if track.kind == "video" else "audio"
        session.add_track(MediaTrack(name, kind, Frames(track), roles.get(name, "unknown")))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("session %s: connection %s", session.id, pc.connectionState)
        if pc.connectionState in ("failed", "closed"):
            await session.close()

    async def close() -> None:
        for track in tracks:
            track.stop()
        await close_peer(pc, session.id)

    session.on_close(close)


async def _answer(pc: RTCPeerConnection, offer_sdp: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except PARSER_ERRORS as exc:
        raise OfferRejectedError(_why(exc)) from exc
    except RuntimeError as exc:  # a StopIteration in a coroutine (``a=fmtp`` lookup)
        if not isinstance(exc.__cause__, StopIteration):
            raise
        raise OfferRejectedError(_why(exc)) from exc


def _mid(pc: RTCPeerConnection, track: MediaStreamTrack) -> str:
    """The track's SDP ``mid``: stable for the session and known to the client."""
    for t in pc.getTransceivers():
        if t.receiver.track is track and t.mid is not None:
            return t.mid
    return track.id


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
            with contextlib.suppress(Exception):  # keep going: the next socket matters
                await stop()
