"""The AudioHook transport's parts on their own: messages, signatures, structured fields,
PCMU and L16 frames, media selection and settings. No server, no models."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from emostream.settings import Settings
from emostream.stream.app import create_app
from emostream.stream.audiohook_config import AudioHookConfig
from emostream.stream.transports.audiohook import codec
from emostream.stream.transports.audiohook.auth import Authenticator, AuthError, Request
from emostream.stream.transports.audiohook.messages import (
    Media,
    OpenParameters,
    ProtocolError,
    duration,
    parse,
    seconds,
    server_message,
)
from emostream.stream.transports.audiohook.server import select_media
from emostream.stream.transports.audiohook.structured_fields import (
    InnerList,
    Item,
    parse_dictionary,
    serialize_inner_list,
)

from audiohook_client import signed_headers

# --- messages ---------------------------------------------------------------------------

SID = "30b0e395-84d3-4570-ac13-9a62d8f514c0"


def _message(type_: str = "ping", parameters: Any = None, **envelope: Any) -> str:
    return json.dumps(
        {
            "version": "2",
            "id": SID,
            "type": type_,
            "seq": 1,
            "serverseq": 0,
            "position": "PT0S",
            "parameters": {} if parameters is None else parameters,
            **envelope,
        }
    )


OPEN = {
    "organizationId": "d7934305-0972-4844-938e-9060eef73d05",
    "conversationId": "090eaa2f-72fa-480a-83e0-8667ff89c0ec",
    "participant": {"id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0", "ani": "+1555", "dnis": "+1"},
    "media": [
        {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
    ],
    "language": "en-US",
    "someFutureField": {"ignored": True},
}


def test_durations_read_and_write() -> None:
    assert seconds("PT0S") == 0 and seconds("PT1.25S") == 1.25 and seconds("PT.5S") == 0.5
    assert duration(1.5) == "PT1.5S" and duration(0) == "PT0S" and duration(12.3456) == "PT12.346S"
    for bad in ("1.5", "PT1.5", "P1S", "PT-1S", "PT1e3S", ""):
        with pytest.raises(ValueError):
            seconds(bad)


def test_an_open_message_parses_and_ignores_what_it_does_not_know() -> None:
    parsed = parse(_message("open", OPEN, position="PT2.5S"))
    assert parsed.type == "open" and parsed.message.position == 2.5
    params = parsed.parameters
    assert isinstance(params, OpenParameters)
    assert params.participant.ani == "+1555" and params.media[0].channels[1] == "internal"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{nope", "bad_json"),
        ("[" * 100 + "]" * 100, "bad_json"),  # nested past safejson's bound
        ('"a string"', "bad_message"),
        (_message(version="1"), "bad_message"),
        (_message(seq=0), "bad_message"),
        (_message(seq=1.0), "bad_message"),
        (_message(seq=True), "bad_message"),
        (_message(serverseq=-1), "bad_message"),
        (_message(position="1.5"), "bad_message"),
        (_message(parameters=[]), "bad_message"),
        (_message("opened"), "unknown_type"),  # a server message
        (_message("dance"), "unknown_type"),
        (_message("open", {"organizationId": "o"}), "bad_parameters"),
        (_message("close", {"reason": "bored"}), "bad_parameters"),
        (_message("discarded", {"start": "PT1S"}), "bad_parameters"),
        (_message("ping", {"rtt": "soon"}), "bad_parameters"),
        # found by tests/test_fuzz_calls.py: a duration past any call's (digits enough to
        # be infinite, or 1e20 s) moved the stream's position out of range, a fault of ours
        # (internal_error, 1011) instead of the client's
        (
            _message("discarded", {"start": "PT0S", "discarded": f"PT{'9' * 400}S"}),
            "bad_parameters",
        ),
        (_message("resumed", {"start": "PT0S", "discarded": f"PT1{'0' * 20}S"}), "bad_parameters"),
        (_message(position=f"PT{'9' * 400}S"), "bad_message"),
        # found there too: a lone surrogate is no text (the call's summary could not be
        # written)
        (_message("update", {"language": "\udcff"}), "bad_json"),
    ],
)
def test_each_malformed_message_is_a_protocol_error(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(text)
    assert info.value.reason == reason and info.value.info


def test_a_server_message_has_the_envelope() -> None:
    out = json.loads(server_message(SID, 3, 7, "pong", {}))
    assert out == {
        "version": "2",
        "id": SID,
        "type": "pong",
        "seq": 3,
        "clientseq": 7,
        "parameters": {},
    }


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([("PCMU", ["external", "internal"], 8000)], 0),
        ([("opus", ["external"], 8000), ("L16", ["internal"], 8000)], 1),
        ([("PCMU", ["external"], 16000), ("PCMU", ["external", "external"], 8000)], None),
        ([("PCMU", ["left", "right"], 8000)], None),
        ([], None),
    ],
)
def test_the_first_media_we_read_is_chosen(offered: list[tuple], chosen: int | None) -> None:
    media = [Media(type="audio", format=f, channels=c, rate=r) for f, c, r in offered]
    got = select_media(media)
    assert got is (None if chosen is None else media[chosen])


# --- frames -----------------------------------------------------------------------------


def test_the_ulaw_table_is_g711() -> None:
    assert codec.ULAW[0x00] == -32124 and codec.ULAW[0x80] == 32124
    assert codec.ULAW[0x7F] == 0 and codec.ULAW[0xFF] == 0
    assert codec.ULAW[0x70] == -120 and codec.ULAW[0xF0] == 120
    every = np.arange(-32768, 32768, dtype=np.int16)
    back = codec.ULAW[np.frombuffer(codec.encode_ulaw(every), np.uint8)].astype(np.int32)
    inside = np.abs(every.astype(np.int32)) <= 32124
    step = np.maximum(8, np.abs(every.astype(np.int32)) // 16)  # a segment's quantum
    assert np.all(np.abs(back - every)[inside] <= step[inside])


@pytest.mark.parametrize("fmt", codec.FORMATS)
def test_frames_deinterleave_into_channels(fmt: codec.Format) -> None:
    pcm = np.stack([np.full(160, 1000, np.int16), np.full(160, -2000, np.int16)], axis=1)
    out = codec.decode(codec.encode(pcm, fmt), fmt, 2)
    assert out.shape == (160, 2)
    if fmt == "L16":
        assert np.array_equal(out, pcm)
    else:
        assert abs(int(out[0, 0]) - 1000) < 40 and abs(int(out[0, 1]) + 2000) < 80


def test_l16_is_little_endian_and_partial_samples_are_refused() -> None:
    assert codec.decode(b"\x01\x00\x00\x80", "L16", 2).tolist() == [[1, -32768]]
    with pytest.raises(ValueError, match="multiple of 4"):
        codec.decode(b"\x00" * 6, "L16", 2)
    with pytest.raises(ValueError, match="multiple of 2"):
        codec.samples_in(3, "PCMU", 2)


# --- structured fields and signatures -----------------------------------------------------

#: RFC 9421, appendix B.2.5: hmac-sha256 over three components.
RFC_KEY = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
RFC_INPUT = (
    'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
)
RFC_SIGNATURE = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"


def test_the_rfc_9421_example_reserializes_and_verifies() -> None:
    inner = parse_dictionary(RFC_INPUT)["sig-b25"]
    assert isinstance(inner, InnerList)
    params = serialize_inner_list(inner)
    assert f"sig-b25={params}" == RFC_INPUT
    base = (
        '"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@authority": example.com\n'
        f'"content-type": application/json\n"@signature-params": {params}'
    )
    sig = parse_dictionary(RFC_SIGNATURE)["sig-b25"]
    assert isinstance(sig, Item) and isinstance(sig.value, bytes)
    assert hmac.compare_digest(hmac.new(RFC_KEY, base.encode(), hashlib.sha256).digest(), sig.value)


def test_structured_fields_read_every_kind() -> None:
    got = parse_dictionary('a=1, b="x \\"y\\"";p=?0, c=(tok :AQI=:);q, d, e=-5')
    assert got["a"] == Item(1) and got["b"] == Item('x "y"', [("p", False)])
    assert got["c"] == InnerList([Item("tok"), Item(b"\x01\x02")], [("q", True)])
    assert got["d"] == Item(True) and got["e"] == Item(-5)


@pytest.mark.parametrize(
    "bad",
    ['a="open', "a=(1 2", "a=:!!:", "A=1", "a=1,", "a=1 b=2", "a=1.5", "a=?2", 'a="\\n"', "a=é"],
)
def test_malformed_structured_fields_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_dictionary(bad)


#: The example of the AudioHook protocol documentation (Genesys Cloud Developer Center).
DOC_KEY, DOC_SECRET = (
    "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh",
    "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=",
)
DOC_HEADERS = {
    "host": "audiohook.example.com",
    "audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05",
    "audiohook-session-id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "audiohook-correlation-id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "x-api-key": DOC_KEY,
    "signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "signature-input": 'sig1=("@request-target" "@authority" "audiohook-organization-id" '
    '"audiohook-session-id" "audiohook-correlation-id" "x-api-key");'
    f'keyid="{DOC_KEY}";nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";'
    "created=1641013200;expires=3282026430",
}
DOC_TARGET = "/api/v1/voicebiometrics/ws"
DOC_CREATED = 1641013200


def _auth(keys: dict[str, str], now: float = DOC_CREATED + 5) -> Authenticator:
    return Authenticator(AudioHookConfig(api_keys=keys), clock=lambda: now)  # type: ignore[arg-type]


def _request(headers: dict[str, str], target: str = DOC_TARGET) -> Request:
    lower = {k.lower(): v for k, v in headers.items()}
    return Request(lower.get, target, lower.get("host", ""))


def test_the_audiohook_documentation_example_verifies_once() -> None:
    auth = _auth({DOC_KEY: DOC_SECRET})
    assert auth.check(_request(DOC_HEADERS)) == DOC_KEY
    with pytest.raises(AuthError) as info:
        auth.check(_request(DOC_HEADERS))
    assert info.value.reason == "replayed_signature"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"x-api-key": "someone-else"}, "unauthorized"),
        ({"x-api-key": ""}, "unauthorized"),
        ({"audiohook-session-id": "6b8e4c2a-0000-4000-8000-000000000000"}, "bad_signature"),
        ({"host": "evil.example.com"}, "bad_signature"),
        ({"signature": "sig1=:AAAA:"}, "bad_signature"),
        ({"signature": "sig2=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:"}, "bad_signature"),
        ({"signature-input": "sig1=garbage("}, "bad_signature"),
        ({"signature-input": None}, "bad_signature"),
        (
            {"signature-input": DOC_HEADERS["signature-input"].replace('"x-api-key")', ")")},
            "bad_signature",
        ),
        (
            {"signature-input": DOC_HEADERS["signature-input"].replace("hmac-sha256", "rsa")},
            "bad_signature",
        ),
    ],
)
def test_a_changed_request_fails_verification(change: dict[str, str | None], reason: str) -> None:
    headers = {k: v for k, v in {**DOC_HEADERS, **change}.items() if v is not None}
    with pytest.raises(AuthError) as info:
        _auth({DOC_KEY: DOC_SECRET}).check(_request(headers))
    assert info.value.reason == reason and info.value.detail
    assert DOC_SECRET not in info.value.detail


def test_the_request_target_is_covered() -> None:
    with pytest.raises(AuthError, match="does not match"):
        _auth({DOC_KEY: DOC_SECRET}).check(_request(DOC_HEADERS, "/v1/audiohook"))


@pytest.mark.parametrize(
    ("now", "what"),
    [(DOC_CREATED - 60, "future"), (DOC_CREATED + 3600, "older than")],
)
def test_a_signature_out_of_its_time_is_stale(now: float, what: str) -> None:
    with pytest.raises(AuthError, match=what) as info:
        _auth({DOC_KEY: DOC_SECRET}, now).check(_request(DOC_HEADERS))
    assert info.value.reason == "stale_signature"


def test_the_tests_signer_and_an_expired_signature() -> None:
    secret = b"s3cret"
    headers = {
        "Host": "127.0.0.1:9",
        "X-API-KEY": "k",
        "Audiohook-Organization-Id": "o",
        "Audiohook-Session-Id": SID,
        "Audiohook-Correlation-Id": "c",
    }
    signed = signed_headers(headers, secret, "/v1/audiohook", "127.0.0.1:9", created=1000)
    keys = {"k": base64.b64encode(secret).decode()}
    assert _auth(keys, 1010).check(_request(signed, "/v1/audiohook")) == "k"
    with pytest.raises(AuthError, match="expired"):  # expires = created + 30
        _auth(keys, 1045).check(_request(signed, "/v1/audiohook"))


def test_without_keys_nobody_connects_and_an_empty_secret_means_unsigned() -> None:
    with pytest.raises(AuthError, match="no API keys"):
        _auth({}).check(_request(DOC_HEADERS))
    plain = {"x-api-key": "plain", "host": "h"}
    assert _auth({"plain": ""}).check(_request(plain)) == "plain"


# --- settings ---------------------------------------------------------------------------


def test_api_keys_come_from_json_and_secrets_must_be_base64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMOSTREAM_AUDIOHOOK__API_KEYS", '{"k1": "c2VjcmV0", "k2": ""}')
    config = Settings().audiohook
    assert config.secret("k1") == b"secret" and config.secret("k2") == b""
    assert "c2VjcmV0" not in repr(config), "secrets stay out of reprs and logs"
    monkeypatch.setenv("EMOSTREAM_AUDIOHOOK__API_KEYS", '{"k1": "not base64!"}')
    with pytest.raises(ValidationError, match="not base64"):
        Settings()


def test_the_owner_token_must_be_an_api_token() -> None:
    with pytest.raises(ValueError, match="owner_token"):
        create_app(Settings(audiohook={"owner_token": "t"}))  # type: ignore[arg-type]
    create_app(Settings(server={"api_tokens": ["t"]}, audiohook={"owner_token": "t"}))  # type: ignore[arg-type]
