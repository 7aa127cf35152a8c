"""Bad input on a Twilio Media Stream is a protocol answer, never a crash.

Each case on a real server on 127.0.0.1: the socket is closed with the right code (1003
unsupported data, 1008 policy, 1009 too big, 1011 ours, 1013 no room) and a reason, the
case is counted in ``emostream_protocol_errors_total{transport="twilio", reason}``, the
stream's session (if it had one) is ended with every task it had, and another stream
open beside it goes on untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emostream.bench.procs import free_port
from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.transports.twilio import stream as twilio_stream

from twilio_client import (
    CHUNK,
    FORMAT,
    PATIENT,
    Served,
    Twilio,
    protocol_errors,
    serving,
    twilio,
    wait_for_session,
    wait_until_ended,
)
from voice_models import voice_repo  # noqa: F401

MAX_BYTES = 4096
IDLE_S = 2.0
SILENCE = b"\xff" * CHUNK


def _settings(root: Path, **session: Any) -> Settings:
    return Settings(
        model_root=root,
        log_level="warning",
        server={"port": free_port()},
        broker=PATIENT,
        session=session,
        twilio={"max_message_bytes": MAX_BYTES, "idle_timeout_s": IDLE_S},
    )


@pytest.fixture(scope="module")
def served(voice_repo: ModelRepository) -> Iterator[Served]:  # noqa: F811
    with serving(_settings(voice_repo.root)) as s:
        yield s


@pytest.fixture(scope="module")
def at_rest(served: Served) -> int:
    """The server's tasks before any stream: what it must come back to."""
    return served.task_count()


async def test_the_server_at_rest(served: Served, at_rest: int) -> None:
    assert at_rest > 0 and not served.sessions.sessions


async def _refused(
    served: Served, sid: str, bad: str | bytes | None, code: int, reason: str, started: bool
) -> str:
    """Open stream ``sid`` (``started``: through ``start`` and one media message), send
    ``bad``: the close code, a reason, one count, and nothing of the session left."""
    before = protocol_errors(reason)
    async with twilio(served, stream=sid) as t:
        await t.connected()
        if started:
            await t.start(tracks=("inbound",))
            await t.media("inbound", 0, SILENCE)
            await wait_for_session(served, sid)
        if bad is not None:
            await t.ws.send(bad)
        got, text = await t.closed()
    assert got == code, (got, text)
    assert text, "a close reason"
    assert protocol_errors(reason) == before + 1
    await wait_until_ended(served, sid)
    assert await served.no_tasks_left(sid), "the session's tasks ended with it"
    return text


def _message(seq: int, event: str, body: dict[str, Any], sid: str) -> str:
    return json.dumps({"event": event, "sequenceNumber": str(seq), event: body, "streamSid": sid})


def _media(seq: int, sid: str, payload: str = "//8=", ms: int = 20) -> str:
    body = {"track": "inbound", "chunk": "2", "timestamp": str(ms), "payload": payload}
    return _message(seq, "media", body, sid)


async def test_text_that_is_not_json(served: Served) -> None:
    text = await _refused(served, "MZjson", "hello, Twilio", 1003, "not_json", started=True)
    assert "not JSON" in text


async def test_json_of_the_wrong_shape(served: Served) -> None:
    await _refused(served, "MZshape", "[1, 2, 3]", 1003, "bad_message", started=True)
    no_payload = _message(3, "media", {"track": "inbound", "timestamp": "20"}, "MZshape2")
    await _refused(served, "MZshape2", no_payload, 1003, "bad_message", started=True)


async def test_an_unknown_event(served: Served) -> None:
    text = await _refused(
        served, "MZevent", _message(3, "hangup", {}, "MZevent"), 1003, "unknown_event", True
    )
    assert "hangup" in text


async def test_media_before_start(served: Served) -> None:
    text = await _refused(served, "MZearly", _media(1, "MZearly"), 1008, "before_start", False)
    assert "before start" in text


async def test_a_sequence_number_that_skips(served: Served) -> None:
    text = await _refused(served, "MZskip", _media(4, "MZskip"), 1008, "bad_sequence", True)
    assert "skips" in text


async def test_a_sequence_number_that_repeats(served: Served) -> None:
    text = await _refused(served, "MZrepeat", _media(2, "MZrepeat"), 1008, "bad_sequence", True)
    assert "repeats" in text


async def test_a_media_format_other_than_mulaw_8k_mono(served: Served) -> None:
    before = protocol_errors("unsupported_format")
    async with twilio(served, stream="MZl16") as t:
        await t.connected()
        await t.start(fmt={**FORMAT, "encoding": "audio/l16", "sampleRate": 16000})
        code, text = await t.closed()
    assert code == 1003 and text and "audio/l16" in text
    assert protocol_errors("unsupported_format") == before + 1
    assert served.sessions.get("MZl16") is None, "no session was opened"


async def test_a_message_over_the_size_limit(served: Served) -> None:
    big = _media(3, "MZbig", payload="//8=" * (MAX_BYTES // 4))
    await _refused(served, "MZbig", big, 1009, "too_big", started=True)


async def test_a_binary_frame(served: Served) -> None:
    await _refused(served, "MZbinary", SILENCE, 1003, "binary", started=True)


async def test_text_that_is_not_utf8(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """Closed by the WebSocket layer (1007) before the stream reads it: counted as text
    that is not JSON, not as a peer that hung up, and with no traceback in the log (uvicorn
    logged its UnicodeDecodeError). Found by tests/test_fuzz_calls.py."""
    before = protocol_errors("not_json")
    with caplog.at_level(logging.WARNING):
        async with twilio(served, stream="MZutf8") as t:
            await t.start(tracks=("inbound",))
            await wait_for_session(served, "MZutf8")
            await t.ws.send(b'{"event": "\xff"}', text=True)
            code, _ = await t.closed()
        assert code == 1007
        await wait_until_ended(served, "MZutf8")
    assert protocol_errors("not_json") == before + 1
    assert await served.no_tasks_left("MZutf8")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_payload_that_is_not_base64(served: Served) -> None:
    bad = _media(3, "MZb64", payload="this is not base64!")
    await _refused(served, "MZb64", bad, 1003, "bad_base64", started=True)


async def test_an_idle_socket(served: Served) -> None:
    text = await _refused(served, "MZidle", None, 1008, "idle", started=True)
    assert f"{IDLE_S:g} s" in text


async def test_a_socket_idle_before_start(served: Served) -> None:
    await _refused(served, "MZsilent", None, 1008, "idle", started=False)


async def test_a_disconnect_mid_call_ends_the_session(served: Served) -> None:
    before = protocol_errors("disconnected")
    async with twilio(served, stream="MZgone") as t:
        await t.connected()
        await t.start(tracks=("inbound", "outbound"))
        await t.media("inbound", 0, SILENCE)
        await wait_for_session(served, "MZgone")
    # the client went without stop
    await wait_until_ended(served, "MZgone")
    assert protocol_errors("disconnected") == before + 1
    assert await served.no_tasks_left("MZgone")


async def test_a_stream_sid_already_open_leaves_the_open_one_alone(served: Served) -> None:
    async with twilio(served, stream="MZtwice") as first:
        await first.connected()
        await first.start(tracks=("inbound",))
        await wait_for_session(served, "MZtwice")
        session = served.sessions.get("MZtwice")
        before = protocol_errors("session_exists")
        async with twilio(served, stream="MZtwice") as second:
            await second.connected()
            await second.start(tracks=("inbound",))
            code, text = await second.closed()
        assert code == 1008 and text and "open already" in text
        assert protocol_errors("session_exists") == before + 1
        assert served.sessions.get("MZtwice") is session, "the first stream's session stays"
        # and every other kind of bad stream beside it changes nothing for it either
        for sid, bad in (("MZx1", "{"), ("MZx2", _media(9, "MZx2")), ("MZx3", b"\x00")):
            async with twilio(served, stream=sid) as other:
                await other.start(tracks=("inbound",))
                await other.ws.send(bad)
                assert (await other.closed())[0] in (1003, 1008)
            await first.media("inbound", 0, SILENCE)
        assert served.sessions.get("MZtwice") is session and not session.closed.is_set()
        await first.stop()
        assert await first.closed() == (1000, "stream stopped")
    await wait_until_ended(served, "MZtwice")


async def test_deleting_the_session_closes_its_socket(served: Served) -> None:
    before = protocol_errors("disconnected")
    async with twilio(served, stream="MZdelete") as t:
        await t.start(tracks=("inbound",))
        await wait_for_session(served, "MZdelete")
        async with served.client() as client:
            assert (await client.delete("/v1/sessions/MZdelete")).status_code == 200
        assert await t.closed() == (1000, "session ended")
    assert protocol_errors("disconnected") == before, "not the peer's fault"
    assert await served.no_tasks_left("MZdelete")


async def test_an_error_of_ours_is_1011_and_ends_only_that_stream(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ulaw: bytes, timestamp_ms: int) -> None:
        raise RuntimeError("a bug")

    before = protocol_errors("internal")
    async with twilio(served, stream="MZbug") as t:
        await t.start(tracks=("inbound",))
        await wait_for_session(served, "MZbug")
        monkeypatch.setattr(twilio_stream, "audio_frame", broken)
        await t.media("inbound", 0, SILENCE)
        assert await t.closed() == (1011, "internal error")
    assert protocol_errors("internal") == before + 1
    await wait_until_ended(served, "MZbug")
    assert await served.no_tasks_left("MZbug")


async def test_a_full_server_says_try_later(voice_repo: ModelRepository) -> None:  # noqa: F811
    with serving(_settings(voice_repo.root, max_sessions=1)) as full:
        async with twilio(full, stream="MZone") as first:
            await first.start(tracks=("inbound",))
            await wait_for_session(full, "MZone")
            before = protocol_errors("too_many_sessions")
            async with twilio(full, stream="MZtwo") as second:
                await second.start(tracks=("inbound",))
                code, text = await second.closed()
            assert code == 1013 and text and "allows 1" in text
            assert protocol_errors("too_many_sessions") == before + 1
            await first.stop()
            assert (await first.closed())[0] == 1000


async def test_a_second_client_kind_cannot_speak_for_twilio(served: Served) -> None:
    """Messages of another stream on this socket (a confused or hostile sender)."""
    async with twilio(served, stream="MZmine") as t:
        await t.start(tracks=("inbound",))
        await wait_for_session(served, "MZmine")
        intruder = Twilio(t.ws, "MZtheirs")
        intruder.seq = t.seq
        await intruder.media("inbound", 20, SILENCE)
        code, text = await t.closed()
    assert code == 1008 and text and "streamSid" in text
    await wait_until_ended(served, "MZmine")


async def test_after_all_that_the_server_is_back_at_rest(served: Served, at_rest: int) -> None:
    """Every stream above ended: no session, and no task more than before the first one
    (the reader, the handler and the session's tasks of each refused stream are gone)."""
    assert not served.sessions.sessions
    async with asyncio.timeout(60):
        while await asyncio.to_thread(served.task_count) > at_rest:
            await asyncio.sleep(0.05)
