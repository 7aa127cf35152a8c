"""The AudioHook protocol on a real server (``emostream serve``'s uvicorn, 127.0.0.1): the
connection probe, and every bad input answered by the protocol, never by a crash.

Each bad client is refused with a ``disconnect`` (reason ``error``, an ``info``) or, before
the upgrade, an HTTP error; the refusal is counted in
``emostream_protocol_errors_total{transport="audiohook"}`` under its reason, its session
(if it had one) ends, no task is left behind, and a bystander call on the same server,
opened first, still answers afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode

from emostream import metrics
from emostream.bench.procs import free_port
from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.server import WS_MAX_BYTES

from audiohook_client import (
    MONO,
    STEREO,
    Client,
    Running,
    eventually,
    refusals,
    serving,
    session,
)
from voice_models import voice_repo  # noqa: F401

KEY, SECRET = "key-signed", b"0123456789abcdef0123456789abcdef"
PLAIN = "key-plain"  # a key with no client secret: its requests are not signed
IDLE_S = 2.0
MAX_FRAME = 4096
PER_KEY = 2


@pytest.fixture(scope="module")
def live(voice_repo: ModelRepository) -> Iterator[Running]:  # noqa: F811
    settings = Settings(
        model_root=voice_repo.root,
        log_level="warning",
        server={"port": free_port()},
        session={"idle_timeout_s": 1.0},  # the connection's own idle clock must decide
        audiohook={
            "api_keys": {KEY: base64.b64encode(SECRET).decode(), PLAIN: ""},
            "idle_timeout_s": IDLE_S,
            "max_frame_bytes": MAX_FRAME,
            "max_sessions_per_key": PER_KEY,
        },
    )
    with serving(settings) as running:
        yield running


def opened_calls() -> float:
    value: float = metrics.SESSIONS_OPENED.labels("audiohook")._value.get()  # type: ignore[attr-defined]
    return value


async def test_the_connection_probe_is_answered_and_opens_no_session(live: Running) -> None:
    before = opened_calls()
    async with session(live.port, KEY, SECRET) as c:
        opened = await c.open(media=[MONO], conversation="00000000-0000-0000-0000-000000000000")
        assert opened["parameters"]["media"] == [MONO]
        assert opened["clientseq"] == 1
        await c.send("ping", {})
        assert (await c.expect("pong"))["clientseq"] == 2
        assert live.sessions() == 0 and opened_calls() == before
        await c.close()


async def test_a_call_opens_its_session_named_by_the_header(live: Running) -> None:
    async with session(live.port, PLAIN) as c:
        opened = await c.open(media=[{**STEREO, "format": "opus"}, STEREO])
        assert opened["parameters"]["media"] == [STEREO], "the first format we read"
        assert opened["parameters"]["startPaused"] is False
        await eventually(lambda: live.sessions() == 1, "the session is open")
        async with httpx.AsyncClient(base_url=live.base, trust_env=False) as http:
            status = (await http.get(f"/v1/sessions/{c.id}")).json()
            assert status["transport"] == "audiohook" and status["audiohook"] == "open"
            assert status["format"] == "PCMU" and status["channels"] == ["external", "internal"]
            summary = (await http.get(f"/v1/sessions/{c.id}/summary")).json()
        assert summary["transport"] == "audiohook"
        assert summary["ids"]["organizationId"] and summary["ids"]["dnis"] == "+15550199"
        await c.send("update", {"language": "fr-FR"})
        await c.expect("updated")
        await c.send("paused", {})
        await c.send("resumed", {"start": "PT0S", "discarded": "PT1.5S"})
        await c.send("discarded", {"start": "PT1.5S", "discarded": "PT0.5S"})
        await c.send("ping", {"rtt": "PT0.012S"})
        await c.expect("pong")
        await c.close()
    await eventually(lambda: live.sessions() == 0, "the session ended with the call")


async def test_a_session_ended_on_the_server_tells_the_client(live: Running) -> None:
    async with session(live.port, PLAIN) as c:
        await c.open()
        async with httpx.AsyncClient(base_url=live.base, trust_env=False) as http:
            assert (await http.delete(f"/v1/sessions/{c.id}")).status_code == 200
        message = await c.expect("disconnect")
        assert message["parameters"]["reason"] == "completed"
        await c.close()


# --- refused before the upgrade ---------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret", "signature", "reason"),
    [
        pytest.param("nobody", b"", {}, "unauthorized", id="unknown-api-key"),
        pytest.param(KEY, b"", {}, "bad_signature", id="unsigned-but-the-key-has-a-secret"),
        pytest.param(KEY, b"another secret", {}, "bad_signature", id="wrong-secret"),
        pytest.param(
            KEY, SECRET, {"created": int(time.time()) - 3600}, "stale_signature", id="stale"
        ),
        pytest.param(
            KEY, SECRET, {"created": int(time.time()) + 3600}, "stale_signature", id="future"
        ),
    ],
)
async def test_a_bad_credential_is_a_401_before_the_upgrade(
    live: Running, key: str, secret: bytes, signature: dict[str, int], reason: str
) -> None:
    before = refusals(reason)
    errors = _Records()
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        with pytest.raises(InvalidStatus) as info:
            async with session(live.port, key, secret, **signature):
                pass
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
    response = info.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["error"] == reason
    assert refusals(reason) == before + 1
    assert not errors.records, "a refusal is not a server error"  # uvicorn 0.54 said so


class _Records(logging.Handler):
    """The ERROR records a logger gets meanwhile."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


async def test_a_refused_upgrade_logs_no_error(
    live: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn 0.54 logged "ASGI callable returned without completing handshake." at
    ERROR after every denial response: each bad credential was an error in our log (found
    by tests/test_fuzz_calls.py)."""
    tasks = live.tasks()
    with caplog.at_level(logging.WARNING):
        for key, session_id in (("nobody", None), (PLAIN, "not-a-uuid")):
            with pytest.raises(InvalidStatus):
                async with session(live.port, key, session_id=session_id):
                    pass
        await eventually(lambda: live.tasks() <= tasks, "the refusals were handled")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_replayed_signature_is_refused(live: Running) -> None:
    nonce = "a-nonce-used-only-once-" + uuid.uuid4().hex
    sid = str(uuid.uuid4())
    async with session(live.port, KEY, SECRET, session_id=sid, nonce=nonce) as c:
        await c.close()
    with pytest.raises(InvalidStatus) as info:
        async with session(live.port, KEY, SECRET, session_id=sid, nonce=nonce):
            pass
    assert json.loads(info.value.response.body)["error"] == "replayed_signature"


async def test_a_session_id_that_is_not_a_uuid_is_a_400(live: Running) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with session(live.port, PLAIN, session_id="not-a-uuid"):
            pass
    assert info.value.response.status_code == 400


async def test_one_key_cannot_take_every_connection(live: Running) -> None:
    before = refusals("key_quota")
    async with session(live.port, PLAIN) as a, session(live.port, PLAIN) as b:
        await a.open()
        await b.open()
        with pytest.raises(InvalidStatus) as info:
            async with session(live.port, PLAIN):
                pass
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"]
        async with session(live.port, KEY, SECRET) as other:  # another key is not locked out
            await other.open()
            await other.close()
        await a.close()
        await b.close()
    assert refusals("key_quota") == before + 1


# --- refused after it: disconnect, counted, nothing left, nobody else touched -------------

Case = Callable[[Client], Awaitable[None]]


async def _not_json(c: Client) -> None:
    await c.ws.send("{this is not json")


async def _not_an_object(c: Client) -> None:
    await c.ws.send("[1, 2, 3]")


async def _wrong_shape(c: Client) -> None:
    await c.send("open", {}, version=3, seq="one")


async def _unknown_type(c: Client) -> None:
    await c.send("dance", {})


async def _bad_parameters(c: Client) -> None:
    await c.send("open", {"organizationId": "x", "conversationId": "y"})  # no media


async def _audio_before_open(c: Client) -> None:
    await c.ws.send(b"\xff" * 160)


async def _seq_skips(c: Client) -> None:
    await c.open()
    await c.send("ping", {}, seq=5)


async def _seq_repeats(c: Client) -> None:
    await c.open()
    await c.send("ping", {}, seq=1)


async def _serverseq_ahead(c: Client) -> None:
    await c.send("ping", {}, serverseq=9)


async def _another_sessions_id(c: Client) -> None:
    await c.send("ping", {}, id=str(uuid.uuid4()))


async def _unsupported_media(c: Client) -> None:
    await c.send(
        "open",
        {
            "organizationId": "d7934305-0972-4844-938e-9060eef73d05",
            "conversationId": str(uuid.uuid4()),
            "media": [{**STEREO, "rate": 16000}, {**MONO, "format": "opus"}],
        },
    )


async def _frame_too_large(c: Client) -> None:
    await c.open()
    await c.audio(b"\xff" * (MAX_FRAME + 2))


async def _text_too_large(c: Client) -> None:
    await c.send("ping", {"padding": "x" * MAX_FRAME})


async def _partial_samples(c: Client) -> None:
    await c.open(media=[{**STEREO, "format": "L16"}])
    await c.audio(b"\x00" * 6)  # 1.5 stereo L16 samples


async def _audio_while_paused(c: Client) -> None:
    await c.open()
    await c.send("paused", {})
    await c.audio(b"\xff" * 320)


async def _second_open(c: Client) -> None:
    opened = await c.open()
    await c.send("open", {**opened["parameters"], "organizationId": "o", "conversationId": "c"})


async def _idle(c: Client) -> None:
    await c.open()
    await asyncio.sleep(IDLE_S)  # then say nothing


CASES: dict[str, tuple[Case, str]] = {
    "text-not-json": (_not_json, "bad_json"),
    "json-not-an-object": (_not_an_object, "bad_message"),
    "json-of-the-wrong-shape": (_wrong_shape, "bad_message"),
    "unknown-message-type": (_unknown_type, "unknown_type"),
    "parameters-not-of-the-type": (_bad_parameters, "bad_parameters"),
    "audio-before-open": (_audio_before_open, "audio_before_open"),
    "seq-skips": (_seq_skips, "bad_seq"),
    "seq-repeats": (_seq_repeats, "bad_seq"),
    "serverseq-never-sent": (_serverseq_ahead, "bad_serverseq"),
    "another-sessions-id": (_another_sessions_id, "wrong_id"),
    "no-media-format-we-take": (_unsupported_media, "unsupported_media"),
    "audio-frame-over-the-limit": (_frame_too_large, "too_large"),
    "text-over-the-limit": (_text_too_large, "too_large"),
    "frame-of-partial-samples": (_partial_samples, "bad_frame"),
    "audio-while-paused": (_audio_while_paused, "audio_while_paused"),
    "open-twice": (_second_open, "unexpected_open"),
    "idle-socket": (_idle, "idle"),
}


@pytest.fixture()
async def bystander(live: Running) -> AsyncIterator[Client]:
    """A healthy call on the same server, open before the bad client comes."""
    async with session(live.port, KEY, SECRET) as c:
        await c.open()

        async def talk() -> None:  # 0.1 s of silence every 0.1 s: never idle
            while True:
                await c.audio(b"\xff" * 1600)
                await asyncio.sleep(0.1)

        talking = asyncio.create_task(talk())
        await eventually(  # its voice reader runs: the tasks a call has are all there
            lambda: any("read_windows" in t for t in live.task_names()), "the call is read"
        )
        yield c
        talking.cancel()
        await c.send("ping", {})
        await c.expect("pong")
        await c.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_a_disconnect_and_nothing_else(
    live: Running, bystander: Client, case: str
) -> None:
    act, reason = CASES[case]
    before = refusals(reason)
    await eventually(lambda: live.sessions() == 1, "only the bystander's session is open")
    tasks = live.tasks()
    async with session(live.port, PLAIN) as c:
        await act(c)
        info = await c.refused()
    assert refusals(reason) == before + 1, info
    await eventually(lambda: live.sessions() == 1, "the bad client's session ended")
    await eventually(lambda: live.tasks() <= tasks, f"no task left behind ({tasks} before)")
    assert live.state.sessions is not None and live.state.sessions.get(bystander.id)


async def test_a_duplicate_session_id_is_refused_and_the_first_call_goes_on(
    live: Running, bystander: Client
) -> None:
    before = refusals("duplicate_session")
    async with session(live.port, PLAIN, session_id=bystander.id) as c:
        await c.send(
            "open",
            {
                "organizationId": "d7934305-0972-4844-938e-9060eef73d05",
                "conversationId": str(uuid.uuid4()),
                "media": [MONO],
            },
        )
        info = await c.refused()
    assert "open already" in info
    assert refusals("duplicate_session") == before + 1


async def test_a_client_that_vanishes_mid_call_leaves_nothing(
    live: Running, bystander: Client
) -> None:
    before = refusals("client_gone")
    await eventually(lambda: live.sessions() == 1, "only the bystander's session is open")
    tasks = live.tasks()
    async with session(live.port, PLAIN) as c:
        await c.open()
        await c.audio(b"\xff" * 1600)
        await eventually(lambda: live.sessions() == 2, "its session is open")
        c.ws.transport.abort()  # no close transaction, no WebSocket close: the TCP drops
    await eventually(lambda: refusals("client_gone") == before + 1, "counted")
    await eventually(lambda: live.sessions() == 1, "its session ended")
    await eventually(lambda: live.tasks() <= tasks, f"no task left behind ({tasks} before)")


@pytest.mark.parametrize(
    ("send", "code", "reason"),
    [
        pytest.param(b'{"type": "\xff"}', 1007, "bad_json", id="text-not-utf8"),
        pytest.param(b"\xff" * (WS_MAX_BYTES + 1), 1009, "too_large", id="over-1-mib"),
    ],
)
async def test_what_the_websocket_layer_refuses_is_counted_as_such(
    live: Running,
    bystander: Client,
    caplog: pytest.LogCaptureFixture,
    send: bytes,
    code: int,
    reason: str,
) -> None:
    """Text that is not UTF-8 and a message over uvicorn's 1 MiB cap are closed by the
    WebSocket layer (1007, 1009) before the connection reads them, so no ``disconnect``
    can be said: counted as what they are (text that is not JSON, a message too large),
    not as a client that hung up, and with no traceback in the log (uvicorn logged its
    UnicodeDecodeError). Found by tests/test_fuzz_calls.py."""
    before = refusals(reason)
    await eventually(lambda: live.sessions() == 1, "only the bystander's session is open")
    tasks = live.tasks()
    with caplog.at_level(logging.WARNING):
        async with session(live.port, PLAIN) as c:
            await c.open()
            await c.ws.send(send, text=code == 1007)
            with pytest.raises(ConnectionClosed):
                await c.recv()
            assert c.ws.close_code == code
        await eventually(lambda: refusals(reason) == before + 1, f"counted as {reason}")
        await eventually(lambda: live.sessions() == 1, "its session ended")
        await eventually(lambda: live.tasks() <= tasks, f"no task left behind ({tasks} before)")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_text_not_utf8_and_a_close_in_one_read(
    live: Running, bystander: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The close frame parsed from the same read moves the connection to closing before
    the text is looked at: uvicorn's answer to the text (a 1007 close) then raised
    InvalidState out of data_received ("Fatal error: protocol.data_received() call
    failed."). The text is dropped instead; the client's close ends the call. Found by
    tests/test_fuzz_calls.py."""
    before = refusals("client_gone")
    await eventually(lambda: live.sessions() == 1, "only the bystander's session is open")
    tasks = live.tasks()
    with caplog.at_level(logging.WARNING):
        async with session(live.port, PLAIN) as c:
            await c.open()
            text = Frame(Opcode.TEXT, b'{"type": "\xff"}').serialize(mask=True, extensions=[])
            close = Frame(Opcode.CLOSE, Close(1000, "").serialize())
            c.ws.transport.write(text + close.serialize(mask=True, extensions=[]))
            with pytest.raises(ConnectionClosed):
                await c.recv()
        await eventually(lambda: refusals("client_gone") == before + 1, "counted")
        await eventually(lambda: live.sessions() == 1, "its session ended")
        await eventually(lambda: live.tasks() <= tasks, f"no task left behind ({tasks} before)")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_bug_of_ours_ends_the_call_not_the_server(
    live: Running, bystander: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emostream.stream.transports.audiohook import audio

    def broken(self: object, seconds: float) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(audio.CallAudio, "gap", broken)
    before = refusals("internal_error")
    async with session(live.port, PLAIN) as c:
        await c.open()
        await c.send("discarded", {"start": "PT0S", "discarded": "PT0.2S"})
        assert "failed" in await c.refused()
    assert refusals("internal_error") == before + 1
    await eventually(lambda: live.sessions() == 1, "its session ended; the bystander's did not")


async def test_a_quiet_paused_call_outlives_the_session_reaper(live: Running) -> None:
    """``session.idle_timeout_s`` is 1 s here, the connection's idle timeout 2 s: a paused
    call that says nothing for 1.5 s is still open (its socket is alive)."""
    async with session(live.port, PLAIN) as c:
        await c.open()
        await c.send("paused", {})
        await asyncio.sleep(1.5)
        await c.send("ping", {})
        await c.expect("pong")
        assert live.state.sessions is not None and live.state.sessions.get(c.id)
        await c.send("resumed", {"start": "PT0S", "discarded": "PT1.5S"})
        await c.audio(b"\xff" * 1600)
        await c.close()
