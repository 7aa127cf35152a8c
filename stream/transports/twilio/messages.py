"""Twilio Media Streams messages, checked, and their audio decoded.

Every message is a JSON text frame with an ``event``: ``connected`` first (no sequence
number), then ``start`` (``sequenceNumber`` "1"), then ``media``, ``dtmf``, ``mark`` and
finally ``stop``, each numbered one more than the one before (Twilio sends numbers as
strings). Anything else is refused with a ``ProtocolError`` carrying the WebSocket close
code and a metric reason: a peer that sends something we do not understand is told so
and hung up on, never half-understood.

Audio is G.711 μ-law at 8 kHz mono, 20 ms (160 bytes) per ``media`` message; it is
decoded with a 256-entry table into 16-bit PCM and stamped with the message's
``timestamp`` (ms since the stream began), so a gap in the stream is a gap in media time.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from av import AudioFrame

from emostream import safejson
from emostream.modalities.base import Role
from emostream.stream.transports.frame_queue import pcm_frame

#: WebSocket close codes (RFC 6455 7.4.1)
NORMAL, POLICY, UNSUPPORTED, TOO_BIG, INTERNAL, TRY_LATER = 1000, 1008, 1003, 1009, 1011, 1013
NOT_UTF8 = 1007  # invalid frame payload data: the WebSocket layer's answer to such text

RATE = 8000
FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1}
#: Twilio's track names and the speaker each carries: inbound is the caller (the
#: customer), outbound what the call sends them (the agent).
ROLES: dict[str, Role] = {"inbound": "customer", "outbound": "agent"}
EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")
SID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a streamSid becomes a session id in URLs
MAX_PARAMS = 64
MAX_PARAM_NAME = 64
MAX_PARAM_VALUE = 1024


class ProtocolError(Exception):
    """A message or connection refused: ``reason`` labels the metric, ``code`` closes the
    socket, ``detail`` is the close reason."""

    def __init__(self, reason: str, detail: str, code: int = UNSUPPORTED) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.code = code


@dataclass(frozen=True)
class Start:
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Media:
    track: str
    timestamp_ms: int
    payload: str  # base64, decoded only for a track that is analysed


@dataclass(frozen=True)
class Message:
    event: str
    seq: int | None
    stream_sid: str | None
    start: Start | None = None
    media: Media | None = None


def _bad(detail: str) -> ProtocolError:
    return ProtocolError("bad_message", detail, UNSUPPORTED)


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise _bad(f"{key} must be an object")
    return value


def _number(value: object, name: str) -> int:
    """Twilio's counters and times: a string of digits (or, leniently, a JSON integer)."""
    if isinstance(value, bool):
        raise _bad(f"{name} must be a number")
    if isinstance(value, int) and 0 <= value < 2**53:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    raise _bad(f"{name} must be a non-negative number")


def _sid(value: object, name: str) -> str:
    if not isinstance(value, str) or not SID.fullmatch(value):
        raise _bad(f"{name} must be 1-64 letters, digits, '-' or '_'")
    return value


def _custom(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_PARAMS:
        raise _bad(f"customParameters must be an object of at most {MAX_PARAMS} strings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str) or not k or len(k) > MAX_PARAM_NAME:
            raise _bad("customParameters: each name (1-64 chars) needs a string value")
        if len(v) > MAX_PARAM_VALUE:
            raise _bad(f"customParameters[{k[:20]!r}] is over {MAX_PARAM_VALUE} characters")
        out[k] = v
    return out


def _start(data: dict[str, Any]) -> Start:
    body = _object(data, "start")
    fmt = _object(body, "mediaFormat")
    if {k: fmt.get(k) for k in FORMAT} != FORMAT:
        enc, rate, channels = (str(fmt.get(k))[:30] for k in FORMAT)
        got = f"{enc} {rate} Hz x{channels}"
        raise ProtocolError(
            "unsupported_format", f"media must be audio/x-mulaw 8000 Hz mono, not {got}"
        )
    tracks = body.get("tracks")
    if (
        not isinstance(tracks, list)
        or not tracks
        or any(not isinstance(t, str) or t not in ROLES for t in tracks)  # JSON may be a list
        or len(set(tracks)) != len(tracks)
    ):
        raise _bad("start.tracks must list inbound and/or outbound")
    return Start(
        stream_sid=_sid(body.get("streamSid"), "start.streamSid"),
        account_sid=_sid(body.get("accountSid"), "start.accountSid"),
        call_sid=_sid(body.get("callSid"), "start.callSid"),
        tracks=tuple(tracks),
        custom=_custom(body.get("customParameters")),
    )


def _media(data: dict[str, Any]) -> Media:
    body = _object(data, "media")
    track = body.get("track")
    if not isinstance(track, str) or track not in ROLES:  # an object or a list: unhashable
        raise _bad("media.track must be inbound or outbound")
    payload = body.get("payload")
    if not isinstance(payload, str):
        raise _bad("media.payload must be a base64 string")
    return Media(track, _number(body.get("timestamp"), "media.timestamp"), payload)


def parse(text: str) -> Message:
    """One text frame as a checked message (``ProtocolError`` otherwise); the order of
    messages is ``Sequence``'s business."""
    try:
        data = safejson.loads(text)
    except ValueError as exc:
        raise ProtocolError("not_json", f"not JSON: {str(exc)[:60]}") from None
    if not isinstance(data, dict):
        raise _bad("a message must be a JSON object")
    event = data.get("event")
    if event not in EVENTS:
        shown = event[:30] if isinstance(event, str) else type(event).__name__
        raise ProtocolError("unknown_event", f"unknown event {shown!r}")
    seq = None if event == "connected" else _number(data.get("sequenceNumber"), "sequenceNumber")
    sid = data.get("streamSid")
    stream_sid = None if sid is None else _sid(sid, "streamSid")
    if event == "start":
        start = _start(data)
        if stream_sid is not None and stream_sid != start.stream_sid:
            raise _bad("streamSid differs from start.streamSid")
        return Message(event, seq, start.stream_sid, start=start)
    if event == "media":
        return Message(event, seq, stream_sid, media=_media(data))
    if event in ("dtmf", "mark", "stop") and not isinstance(data.get(event, {}), dict):
        raise _bad(f"{event} must be an object")
    return Message(event, seq, stream_sid)


class Sequence:
    """The order Twilio keeps: ``connected`` (optional, first), one ``start`` numbered 1,
    then everything numbered one more than the one before, all of one ``streamSid``."""

    def __init__(self) -> None:
        self.started: Start | None = None
        self.stopped = False
        self.expected = 1
        self.last_ms: dict[str, int] = {}

    def check(self, msg: Message) -> None:
        if self.stopped:
            raise ProtocolError("after_stop", f"{msg.event} after stop", POLICY)
        if msg.event == "connected":
            if self.started is not None or self.expected != 1:
                raise ProtocolError("bad_order", "connected after start", POLICY)
            return
        if msg.event == "start":
            if self.started is not None:
                raise ProtocolError("bad_order", "a second start", POLICY)
        elif self.started is None:
            raise ProtocolError("before_start", f"{msg.event} before start", POLICY)
        elif msg.stream_sid is not None and msg.stream_sid != self.started.stream_sid:
            raise ProtocolError("stream_mismatch", "streamSid is not this stream's", POLICY)
        if msg.seq != self.expected:
            how = "repeats" if msg.seq is not None and msg.seq < self.expected else "skips"
            raise ProtocolError(
                "bad_sequence", f"sequenceNumber {msg.seq} {how}: expected {self.expected}", POLICY
            )
        self.expected += 1
        if msg.start is not None:
            self.started = msg.start
        elif msg.media is not None:
            self._media(msg.media, self.started)
        elif msg.event == "stop":
            self.stopped = True

    def _media(self, media: Media, start: Start | None) -> None:
        if start is None or media.track not in start.tracks:
            raise ProtocolError("unexpected_track", f"{media.track} is not in start.tracks", POLICY)
        last = self.last_ms.get(media.track)
        if last is not None and media.timestamp_ms < last:
            back = f"{media.track} timestamp went back to {media.timestamp_ms}"
            raise ProtocolError("bad_timestamp", back, POLICY)
        self.last_ms[media.track] = media.timestamp_ms


def mulaw_table() -> np.ndarray:
    """ITU-T G.711 μ-law: each of the 256 codes as a 16-bit sample (±32124)."""
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # μ-law bytes are sent inverted
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


ULAW = mulaw_table()


def payload_bytes(payload: str) -> bytes:
    """The μ-law bytes of a ``media.payload`` (``ProtocolError`` for bad base64)."""
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_base64", "media.payload is not valid base64") from None


def audio_frame(ulaw: bytes, timestamp_ms: int) -> AudioFrame:
    """16-bit mono PCM at 8 kHz, its pts the stream time of its first sample."""
    pcm = ULAW[np.frombuffer(ulaw, np.uint8)]
    return pcm_frame(pcm, RATE, timestamp_ms * (RATE // 1000))
