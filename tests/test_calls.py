"""Calls on the transport-neutral session: roles, the EU workplace rule, the summary, and
the webhook that receives it when the call ends (a real HTTP receiver on loopback)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.app import AppState
from emostream.stream.errors import ApiError
from emostream.stream.session import Session
from emostream.stream.transports.local import LocalTrack, add_track, open_local
from emostream.stream.transports.webrtc.signalling import whip_roles
from emostream.stream.webhook import SIGNATURE_HEADER, verify

from redis_server import RedisServer
from voice_models import clip, has_voice_model, ravdess, voice_repo  # noqa: F401

PATIENT = {"deadline_ms": 600_000, "voice_deadline_ms": 600_000}
SECRET = "whsec-test"


class Receiver:
    """A webhook receiver on loopback: records each POST (body, headers); ``status`` is
    what it answers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[bytes, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.posts.append((body, dict(self.headers)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def _serving(root: object, **calls: object) -> AppState:
    s = Settings(model_root=root, broker=PATIENT, calls=calls)
    app = AppState(s)
    await asyncio.to_thread(app.load)
    await app.start_realtime()
    return app


async def _feed(track: LocalTrack, samples: np.ndarray) -> None:
    pcm = (samples * 32767).astype(np.int16)
    for start in range(0, len(pcm), 1600):  # 100 ms at 16 kHz, 10x real time
        track.push_pcm(pcm[start : start + 1600], 16000)
        await asyncio.sleep(0.01)
    track.end()


async def _voice(session: Session, until: int, timeout: float = 120.0) -> list[dict]:
    """Voice messages until ``until`` speech windows of the customer have come."""
    queue = session.subscribe()
    got: list[dict] = []
    async with asyncio.timeout(timeout):
        while sum(1 for m in got if m.get("speech")) < until:
            item = await queue.get()
            if item is None:
                break
            msg = json.loads(item)
            if msg["type"] == "voice":
                got.append(msg)
    return got


def _call(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: F811
    """Customer: 2 s of silence then the clip; agent: the clip then 2 s of silence."""
    silence = np.zeros(32000, np.float32)
    return np.concatenate([silence, clip]), np.concatenate([clip, silence])


async def test_with_the_default_policy_only_the_customer_is_analysed(
    has_voice_model: ModelRepository, clip: np.ndarray, receiver: Receiver  # noqa: F811
) -> None:
    app = await _serving(has_voice_model.root, webhook_url=receiver.url, webhook_secret=SECRET)
    try:
        assert app.sessions is not None
        session = await open_local(app.sessions)
        session.call.ids["callSid"] = "CA-test"
        customer = add_track(session, "inbound", "audio", role="customer")
        agent = add_track(session, "outbound", "audio", role="agent")
        reading = asyncio.create_task(_voice(session, until=3))
        customer_audio, agent_audio = _call(clip)
        await asyncio.gather(_feed(customer, customer_audio), _feed(agent, agent_audio))
        got = await reading
        assert got and {m["role"] for m in got} == {"customer"}
        assert {m["track"] for m in got} == {"inbound"}
        assert any(not m["speech"] for m in got), "the customer's leading silence"
        await asyncio.sleep(0.3)  # the last windows
        live = app.sessions.summary(session.id)
        assert live is not None and live.ended is None
        assert live.roles["customer"].analysed and (live.roles["customer"].windows or 0) >= 3
        agent_summary = live.roles["agent"]
        assert not agent_summary.analysed and agent_summary.windows is None
        assert abs(agent_summary.audio_s - len(agent_audio) / 16000) < 0.05
        assert await app.sessions.end(session.id)
        ended = app.sessions.summary(session.id)  # kept after the end
        assert ended is not None and ended.ended is not None and ended.ids == {"callSid": "CA-test"}
        for _ in range(300):  # failure guard: the delivery runs in its own task
            if receiver.posts:
                break
            await asyncio.sleep(0.05)
        body, headers = receiver.posts[0]
        assert json.loads(body) == json.loads(ended.to_json())
        assert verify(body, headers[SIGNATURE_HEADER], SECRET, now=time.time())
    finally:
        await app.stop_realtime()


async def test_agents_are_analysed_only_when_the_policy_says_so(
    has_voice_model: ModelRepository, clip: np.ndarray  # noqa: F811
) -> None:
    app = await _serving(has_voice_model.root, analyse_roles="customer,agent")
    try:
        assert app.sessions is not None
        session = await open_local(app.sessions)
        agent = add_track(session, "outbound", "audio", role="agent")
        reading = asyncio.create_task(_voice(session, until=2))
        await _feed(agent, _call(clip)[1])
        got = await reading
        assert got and {m["role"] for m in got} == {"agent"}
        summary = app.sessions.summary(session.id)
        assert summary is not None and summary.roles["agent"].analysed
        await app.sessions.end(session.id)
    finally:
        await app.stop_realtime()


async def test_a_webhook_that_is_down_does_not_hold_up_the_call_or_the_server(
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    down = Receiver(status=503)
    try:
        app = await _serving(
            has_voice_model.root, webhook_url=down.url, webhook_retry_s=30, webhook_timeout_s=1
        )
        try:
            assert app.sessions is not None
            session = await open_local(app.sessions)
            await app.sessions.end(session.id)  # returns while the delivery retries
            assert app.sessions.get(session.id) is None
            other = await open_local(app.sessions)  # the next call is not held up
            assert app.sessions.get(other.id) is other
            for _ in range(200):
                if down.posts:
                    break
                await asyncio.sleep(0.05)
            assert down.posts, "the delivery was attempted"
        finally:
            await app.stop_realtime()
    finally:
        down.close()


def test_whip_roles_are_mid_role_pairs_and_anything_else_is_a_400() -> None:
    assert whip_roles("0:agent,1:customer") == {"0": "agent", "1": "customer"}
    assert whip_roles(None) == {} and whip_roles("") == {}
    for bad in ("0:boss", "agent", ":customer", "0=agent"):
        with pytest.raises(ApiError) as err:
            whip_roles(bad)
        assert err.value.status == 400 and err.value.code == "bad_roles"


def test_the_role_policy_is_validated_and_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("EMOSTREAM_CALLS__ANALYSE_ROLES", "customer,boss")
    with pytest.raises(ValidationError, match="unknown role"):
        Settings()
    monkeypatch.setenv("EMOSTREAM_CALLS__ANALYSE_ROLES", "customer")
    policy = Settings().calls.policy
    assert policy["analyse_roles"] == ["customer"] and policy["agents_analysed"] is False
    assert "Art. 5(1)(f)" in str(policy["rule"])


def test_a_voice_jobs_role_crosses_the_redis_wire_and_a_bad_one_is_refused() -> None:
    from emostream.broker.wire import WireError, encode_job, job_header
    from emostream.pipeline.jobs import Job, VoiceInfo

    info = VoiceInfo("inbound", 1.0, 2.5, role="customer")
    fields = encode_job(Job("s", 1, 1.0, np.zeros(24000, np.float32), info))
    assert job_header(fields, "1-0").window == info
    older = {k: v for k, v in fields.items() if k != b"role"}  # an ingest node before roles
    assert job_header(older, "1-0").window.role == "unknown"
    with pytest.raises(WireError, match="role"):
        job_header({**fields, b"role": b"boss"}, "1-0")


def test_the_summary_schema_in_the_docs_is_the_codes() -> None:
    from pathlib import Path

    from emostream.stream.call_summary import CallSummary

    path = Path(__file__).resolve().parents[1] / "docs" / "call-summary.schema.json"
    generated = json.dumps(CallSummary.model_json_schema(by_alias=True), indent=2, sort_keys=True)
    assert json.loads(path.read_text()) == json.loads(generated), (
        "regenerate docs/call-summary.schema.json from CallSummary.model_json_schema()"
    )


@pytest.mark.redis
async def test_with_redis_any_ingest_node_answers_for_an_ended_call(
    redis_server: RedisServer,
) -> None:
    """Node A ends a call; node B (another manager on the same Redis) serves its summary,
    with the same owner and session token, until ``calls.keep_s`` runs out."""
    from emostream.broker.redis_ingest import RedisIngest
    from emostream.stream.calls_config import CallsConfig
    from emostream.stream.server_config import SessionConfig
    from emostream.stream.session_manager import SessionManager

    from brokers import broker_config

    nodes = [RedisIngest(broker_config(redis_server.url)) for _ in range(2)]
    for node in nodes:
        await node.start()
    a, b = (SessionManager(n, SessionConfig(), calls=CallsConfig(keep_s=60)) for n in nodes)
    try:
        session = await a.open(owner=b"tenant-1", transport="twilio", session_id="MZ123")
        session.call.ids["callSid"] = "CA9"
        await a.end("MZ123")
        assert b.get("MZ123") is None and "MZ123" not in b.ended
        kept = await b.ended_call("MZ123")
        assert kept is not None and kept.owner == b"tenant-1" and kept.secret == session.secret
        assert kept.summary.ids == {"callSid": "CA9"} and kept.summary.transport == "twilio"
        assert await b.ended_call("nobody") is None
    finally:
        for m in (a, b):
            await m.close()
        for node in nodes:
            await node.close()


async def test_one_credential_cannot_take_every_session() -> None:
    from emostream.broker.memory import MemoryBroker
    from emostream.stream.server_config import SessionConfig
    from emostream.stream.session_manager import SessionLimitError, SessionManager

    broker = MemoryBroker()
    await broker.start()
    manager = SessionManager(broker, SessionConfig(max_sessions=4, max_sessions_per_owner=2))
    try:
        for _ in range(2):
            await manager.open(owner=b"greedy")
        with pytest.raises(SessionLimitError, match="max_sessions_per_owner"):
            await manager.open(owner=b"greedy")
        await manager.open(owner=b"polite")  # the others still get in
        await manager.open(owner=None)  # an open server has no owners to count
        assert len(manager.sessions) == 4
    finally:
        await manager.close()
        await broker.close()
