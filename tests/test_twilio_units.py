"""Twilio Media Streams without a server: the μ-law table against FFmpeg's decoder, every
message shape and order the parser refuses, the signature against Twilio's own published
test vectors, and the frames a ``media`` message becomes."""

from __future__ import annotations

import base64
import json
from typing import Any

import av
import numpy as np
import pytest

from emostream.settings import Settings
from emostream.stream.transports.frame_queue import FrameQueue
from emostream.stream.transports.twilio.auth import port_variants, signature
from emostream.stream.transports.twilio.messages import (
    POLICY,
    TOO_BIG,
    ULAW,
    UNSUPPORTED,
    ProtocolError,
    Sequence,
    audio_frame,
    parse,
    payload_bytes,
)
from emostream.stream.transports.twilio.stream import short
from emostream.stream.twilio_config import TwilioConfig

SID = "MZ" + "a" * 32
FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


def _start(**over: Any) -> dict[str, Any]:
    body = {
        "streamSid": SID,
        "accountSid": "AC" + "b" * 32,
        "callSid": "CA" + "c" * 32,
        "tracks": ["inbound", "outbound"],
        "mediaFormat": FORMAT,
        "customParameters": {"agentId": "a-17"},
    }
    body.update(over)
    return {"event": "start", "sequenceNumber": "1", "start": body, "streamSid": SID}


def _media(seq: int, track: str = "inbound", ms: int = 0, payload: str = "//8=") -> str:
    media = {"track": track, "chunk": "1", "timestamp": str(ms), "payload": payload}
    return json.dumps(
        {"event": "media", "sequenceNumber": str(seq), "media": media, "streamSid": SID}
    )


def _decode_with_ffmpeg(data: bytes) -> np.ndarray:
    codec = av.CodecContext.create("pcm_mulaw", "r")
    codec.sample_rate, codec.layout = 8000, "mono"  # type: ignore[attr-defined]
    frames = codec.decode(av.Packet(data))  # type: ignore[attr-defined]
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def test_the_mulaw_table_is_ffmpegs_decoder() -> None:
    assert np.array_equal(ULAW, _decode_with_ffmpeg(bytes(range(256))))
    assert ULAW[0xFF] == 0 and ULAW[0x00] == -32124 and ULAW[0x80] == 32124


def test_a_media_payload_becomes_a_frame_at_its_stream_time() -> None:
    ulaw = bytes(range(160))
    frame = audio_frame(payload_bytes(base64.b64encode(ulaw).decode()), timestamp_ms=1240)
    assert frame.sample_rate == 8000 and frame.samples == 160
    assert float(frame.pts * frame.time_base) == pytest.approx(1.24)
    assert np.array_equal(frame.to_ndarray().reshape(-1), ULAW[np.arange(160)])


def test_a_start_message_is_read() -> None:
    msg = parse(json.dumps(_start()))
    assert msg.event == "start" and msg.seq == 1 and msg.start is not None
    assert msg.start.stream_sid == SID and msg.start.tracks == ("inbound", "outbound")
    assert msg.start.custom == {"agentId": "a-17"}


BAD: dict[str, tuple[str, str, int]] = {
    "not-json": ("hello", "not_json", UNSUPPORTED),
    "too-deep": ("[" * 100 + "]" * 100, "not_json", UNSUPPORTED),
    "not-an-object": ("[1, 2]", "bad_message", UNSUPPORTED),
    "no-event": ('{"sequenceNumber": "1"}', "unknown_event", UNSUPPORTED),
    "unknown-event": ('{"event": "hangup", "sequenceNumber": "1"}', "unknown_event", UNSUPPORTED),
    "no-sequence": ('{"event": "mark", "mark": {"name": "x"}}', "bad_message", UNSUPPORTED),
    "bad-sequence": ('{"event": "stop", "sequenceNumber": "-1"}', "bad_message", UNSUPPORTED),
    "bool-sequence": ('{"event": "stop", "sequenceNumber": true}', "bad_message", UNSUPPORTED),
    "no-payload": (
        '{"event": "media", "sequenceNumber": "2", "media": {"track": "inbound", '
        '"timestamp": "0"}}',
        "bad_message",
        UNSUPPORTED,
    ),
    "bad-track": (_media(2, track="both"), "bad_message", UNSUPPORTED),
    # found by tests/test_fuzz_calls.py: a JSON object or list where a track name goes was
    # looked up in a dict (TypeError: unhashable), a 1011 instead of 1003
    "track-an-object": (
        _media(2).replace('"track": "inbound"', '"track": {"a": 1}'),
        "bad_message",
        UNSUPPORTED,
    ),
    "tracks-of-lists": (json.dumps(_start(tracks=[["inbound"]])), "bad_message", UNSUPPORTED),
    # found by tests/test_fuzz_calls.py: a lone surrogate is no text (the call's summary
    # could not be written)
    "param-a-lone-surrogate": (
        json.dumps(_start(customParameters={"p": "\udcff"})),
        "not_json",
        UNSUPPORTED,
    ),
    "bad-timestamp": (
        _media(2).replace('"timestamp": "0"', '"timestamp": "soon"'),
        "bad_message",
        UNSUPPORTED,
    ),
    "pcm-16k": (
        json.dumps(_start(mediaFormat={**FORMAT, "encoding": "audio/l16", "sampleRate": 16000})),
        "unsupported_format",
        UNSUPPORTED,
    ),
    "stereo": (
        json.dumps(_start(mediaFormat={**FORMAT, "channels": 2})),
        "unsupported_format",
        UNSUPPORTED,
    ),
    "no-tracks": (json.dumps(_start(tracks=[])), "bad_message", UNSUPPORTED),
    "odd-track": (json.dumps(_start(tracks=["inbound", "sideways"])), "bad_message", UNSUPPORTED),
    "sid-with-slash": (json.dumps(_start(streamSid="MZ/../x")), "bad_message", UNSUPPORTED),
    "param-not-text": (
        json.dumps(_start(customParameters={"n": 1})),
        "bad_message",
        UNSUPPORTED,
    ),
    "too-many-params": (
        json.dumps(_start(customParameters={f"p{i}": "v" for i in range(65)})),
        "bad_message",
        UNSUPPORTED,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_message_is_refused_with_its_reason(case: str) -> None:
    text, reason, code = BAD[case]
    with pytest.raises(ProtocolError) as caught:
        parse(text)
    assert (caught.value.reason, caught.value.code) == (reason, code)
    assert len(caught.value.detail.encode()) <= 123


def test_bad_base64_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        payload_bytes("not base64!")
    assert caught.value.reason == "bad_base64" and caught.value.code == UNSUPPORTED


def _order(*texts: str) -> Sequence:
    order = Sequence()
    for text in texts:
        order.check(parse(text))
    return order


CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = json.dumps(_start())
ORDER: dict[str, tuple[list[str], str]] = {
    "media-before-start": ([CONNECTED, _media(1)], "before_start"),
    "skip": ([CONNECTED, START, _media(3)], "bad_sequence"),
    "repeat": ([START, _media(2), _media(2, ms=20)], "bad_sequence"),
    "second-start": ([START, START.replace('"1"', '"2"', 1)], "bad_order"),
    "connected-after-start": ([START, CONNECTED], "bad_order"),
    "unannounced-track": (
        [json.dumps(_start(tracks=["inbound"])), _media(2, track="outbound")],
        "unexpected_track",
    ),
    "other-stream": ([START, _media(2).replace(SID, "MZother")], "stream_mismatch"),
    "time-goes-back": ([START, _media(2, ms=40), _media(3, ms=20)], "bad_timestamp"),
    "after-stop": (
        [START, '{"event": "stop", "sequenceNumber": "2", "stop": {}}', _media(3)],
        "after_stop",
    ),
}


@pytest.mark.parametrize("case", sorted(ORDER))
def test_each_message_out_of_order_is_refused(case: str) -> None:
    texts, reason = ORDER[case]
    with pytest.raises(ProtocolError) as caught:
        _order(*texts)
    assert caught.value.reason == reason and caught.value.code == POLICY


def test_a_well_ordered_stream_is_accepted() -> None:
    digit = {"track": "inbound_track", "digit": "1"}
    dtmf = json.dumps({"event": "dtmf", "sequenceNumber": "4", "dtmf": digit})
    order = _order(
        CONNECTED,
        START,
        _media(2),
        _media(3, track="outbound"),
        dtmf,
        '{"event": "mark", "sequenceNumber": "5", "mark": {"name": "x"}}',
        _media(6, ms=20),
        '{"event": "stop", "sequenceNumber": "7", "stop": {}}',
    )
    assert order.stopped and order.expected == 8


# Twilio's published vectors (twilio-python tests/unit/test_request_validator.py): the
# URL, then the POST parameters sorted and appended, HMAC-SHA1 with the token "12345".
URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = "CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"


def test_the_signature_matches_twilios_vectors() -> None:
    assert signature("12345", URI + PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    with443 = [u for u in port_variants(URI) if ":443" in u]
    assert with443 and signature("12345", with443[0] + PARAMS) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    with1234 = port_variants(URI.replace(".com", ".com:1234"))
    assert URI in with1234  # Twilio's validators drop any port


def test_port_variants() -> None:
    assert port_variants("wss://h.example/v1/twilio") == [
        "wss://h.example/v1/twilio",
        "wss://h.example:443/v1/twilio",
    ]
    assert port_variants("ws://[::1]:8000/v1/twilio") == [
        "ws://[::1]:8000/v1/twilio",
        "ws://[::1]/v1/twilio",
    ]


def test_public_url_is_a_url_base() -> None:
    assert TwilioConfig(public_url="wss://calls.example.com/").public_url == (
        "wss://calls.example.com"
    )
    for bad in ("calls.example.com", "wss://", "wss://h/x?token=1", "ftp://h"):
        with pytest.raises(ValueError):
            TwilioConfig(public_url=bad)


def test_owner_token_must_be_an_api_token() -> None:
    from emostream.stream.transports.twilio.auth import Admission

    s = Settings(server={"api_tokens": ["t1"]}, twilio={"auth_token": "x", "owner_token": "t2"})
    with pytest.raises(ValueError, match="owner_token"):
        Admission(s.server, s.twilio)


def test_a_close_reason_fits_a_close_frame() -> None:
    assert len(short("é" * 200).encode()) <= 123
    assert TOO_BIG == 1009


async def test_a_frame_queue_drops_its_oldest_when_its_reader_lags() -> None:
    queue = FrameQueue("inbound", limit=500)
    for i in range(600):
        queue.push(audio_frame(b"\xff" * 160, i * 20))
    queue.end()
    got = [frame.pts async for frame in queue]
    assert len(got) == 500 and got[0] == 100 * 160  # the first 100 went
    assert queue.empty
