"""Twilio Media Streams end to end: a real server on 127.0.0.1, a client that speaks as
Twilio does, real RAVDESS speech in μ-law.

A call has an inbound track (the customer: silence, a RAVDESS clip, silence, a one-second
hole in the stream, silence) and an outbound one (the agent: another actor's clip). Under
the default policy (``calls.analyse_roles`` customer, unknown) only the customer gets voice
messages: speech windows over the clip, silent ones over the silence, none across the
hole; the agent's audio is counted, never decoded. With ``agent`` in the policy the agent
gets them too. The summary carries the call's ids and custom parameters. Then who may open
a stream: X-Twilio-Signature (good, bad, missing, behind a proxy) or an API token, and a
per-credential quota (session.max_sessions_per_owner). The bad inputs are
``test_twilio_protocol.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from emostream.bench.procs import free_port
from emostream.broker.redis_worker import RedisWorker
from emostream.models.batching import BatchWorker
from emostream.models.repository import ModelRepository
from emostream.models.voice import VoiceAnalyzer
from emostream.settings import Settings
from emostream.stream.audio import read_audio
from emostream.stream.transports.twilio.auth import signature

from brokers import broker_config
from redis_server import RedisServer
from twilio_client import (
    ACCOUNT,
    CALL,
    CHUNK,
    PATIENT,
    STREAM,
    Served,
    Twilio,
    events,
    mulaw,
    protocol_errors,
    serving,
    twilio,
    wait_for_session,
    wait_until_ended,
)
from voice_models import CLIP, has_voice_model, ravdess, voice_repo  # noqa: F401

AGENT_CLIP = "Actor_02/03-01-05-02-01-01-02.flac"
CUSTOM = {"agentId": "a-17", "queue": "billing"}
LEAD_S, TAIL_S, HOLE_S, AFTER_S = 2.0, 1.0, 1.0, 2.0


def settings(root: Path, **branches: Any) -> Settings:
    server = {"port": free_port(), **branches.pop("server", {})}
    broker = {**PATIENT, **branches.pop("broker", {})}
    return Settings(model_root=root, log_level="warning", server=server, broker=broker, **branches)


@dataclass(frozen=True)
class Audio:
    inbound: bytes  # μ-law, the customer
    outbound: bytes  # μ-law, the agent
    speech: tuple[float, float]  # the customer's clip, in stream seconds
    hole: tuple[float, float]  # no inbound media in this span

    @property
    def outbound_s(self) -> float:
        return len(self.outbound) / 8000


@pytest.fixture(scope="module")
def audio(ravdess: Path) -> Audio:  # noqa: F811
    clip = read_audio(ravdess / CLIP, rate=8000)
    agent = read_audio(ravdess / AGENT_CLIP, rate=8000)
    silence = np.zeros

    def whole(x: np.ndarray) -> np.ndarray:
        return x[: len(x) // CHUNK * CHUNK]

    clip = whole(clip)
    before = int(LEAD_S * 8000)
    inbound = np.concatenate([silence(before), clip, silence(int((TAIL_S + AFTER_S) * 8000))])
    speech_end = (before + len(clip)) / 8000
    hole_at = speech_end + TAIL_S
    total = len(inbound) / 8000 + HOLE_S
    outbound = np.concatenate([silence(8000), whole(agent)])
    outbound = np.concatenate([outbound, silence(int(total * 8000) - len(outbound))])
    return Audio(
        mulaw(inbound), mulaw(whole(outbound)), (LEAD_S, speech_end), (hole_at, hole_at + HOLE_S)
    )


async def call(served: Served, audio: Audio) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One whole call: its SSE messages and its summary after it ended."""
    ready = asyncio.Event()
    got: list[dict[str, Any]] = []
    async with twilio(served) as t:
        await t.connected()
        await t.start(custom=CUSTOM)
        await wait_for_session(served, STREAM)
        reading = asyncio.create_task(events(served, STREAM, ready, got))
        async with asyncio.timeout(60):
            await ready.wait()
        await send_audio(t, audio)
        async with asyncio.timeout(120):  # the windows after the hole came: stop
            while not any(m.get("start", 0) >= audio.hole[1] - 0.01 for m in got):
                await asyncio.sleep(0.05)
        await t.stop()
        assert await t.closed() == (1000, "stream stopped")
    await asyncio.wait_for(reading, 120)
    async with served.client() as client:
        reply = await client.get(f"/v1/sessions/{STREAM}/summary")
    assert reply.status_code == 200, reply.text
    return got, reply.json()


async def send_audio(t: Twilio, audio: Audio) -> None:
    """Both tracks in 20 ms messages, interleaved as Twilio sends them, about 5x real
    time; the inbound track skips ``audio.hole``."""
    hole = (round(audio.hole[0] * 1000), round(audio.hole[1] * 1000))
    inbound = iter(range(0, len(audio.inbound), CHUNK))
    for i, at in enumerate(range(0, len(audio.outbound), CHUNK)):
        ms = i * 20
        if not hole[0] <= ms < hole[1]:
            start = next(inbound, None)
            if start is not None:
                await t.media("inbound", ms, audio.inbound[start : start + CHUNK])
        await t.media("outbound", ms, audio.outbound[at : at + CHUNK])
        await asyncio.sleep(0.004)


def voices(got: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [m for m in got if m["type"] == "voice" and m["role"] == role]


def check_customer(got: list[dict[str, Any]], audio: Audio) -> None:
    customer = voices(got, "customer")
    assert customer and {m["track"] for m in customer} == {"inbound"}
    assert all(m["session"] == STREAM for m in got)
    speech = [m for m in customer if m["speech"]]
    assert speech and all(m["label"] and m["scores"] for m in speech)
    low, high = audio.speech
    assert all(m["end"] > low and m["start"] < high for m in speech), "speech only over the clip"
    quiet = [m for m in customer if m["end"] <= low]
    assert quiet and not any(m["speech"] for m in quiet), "the leading silence is silent"
    a, b = audio.hole
    assert all(m["end"] <= a + 0.01 or m["start"] >= b - 0.01 for m in customer), "none spans it"
    after = [m["start"] for m in customer if m["start"] >= b - 0.01]
    assert after and min(after) == pytest.approx(b, abs=0.03), "windows restart after the hole"


def check_summary(summary: dict[str, Any], audio: Audio, agent_analysed: bool) -> None:
    assert summary["session"] == STREAM and summary["transport"] == "twilio"
    assert summary["ended"] is not None
    ids = summary["ids"]
    assert ids["callSid"] == CALL and ids["accountSid"] == ACCOUNT and ids["streamSid"] == STREAM
    assert ids["param.agentId"] == "a-17" and ids["param.queue"] == "billing"
    customer, agent = summary["roles"]["customer"], summary["roles"]["agent"]
    assert customer["analysed"] and customer["windows"] >= 1 and customer["tracks"] == ["inbound"]
    assert customer["dominant"] and customer["speech_s"] > 0
    assert agent["analysed"] is agent_analysed and agent["tracks"] == ["outbound"]
    if agent_analysed:
        assert agent["windows"] >= 1
    else:
        assert agent["audio_s"] == pytest.approx(audio.outbound_s, abs=0.05)
        assert "windows" not in agent


@pytest.fixture(scope="module")
def default_policy(has_voice_model: ModelRepository) -> Iterator[Served]:  # noqa: F811
    with serving(settings(has_voice_model.root)) as served:
        yield served


async def test_a_call_gives_the_customer_voice_messages_and_not_the_agent(
    default_policy: Served, audio: Audio
) -> None:
    got, summary = await call(default_policy, audio)
    check_customer(got, audio)
    assert not voices(got, "agent"), "agents are not analysed under the default policy"
    check_summary(summary, audio, agent_analysed=False)
    assert default_policy.sessions.get(STREAM) is None
    assert await default_policy.no_tasks_left(STREAM)


async def test_with_agents_in_the_policy_the_agent_gets_voice_messages(
    has_voice_model: ModelRepository,  # noqa: F811
    audio: Audio,
) -> None:
    roles = {"analyse_roles": ["customer", "agent"]}
    with serving(settings(has_voice_model.root, calls=roles)) as served:
        got, summary = await call(served, audio)
    check_customer(got, audio)
    agent = voices(got, "agent")
    assert agent and {m["track"] for m in agent} == {"outbound"}
    assert any(m["speech"] and m["label"] for m in agent)
    check_summary(summary, audio, agent_analysed=True)


async def test_a_call_through_the_redis_broker(
    redis_server: RedisServer,
    has_voice_model: ModelRepository,  # noqa: F811
    audio: Audio,
) -> None:
    s = settings(has_voice_model.root, broker={"url": redis_server.url})
    analyzer = VoiceAnalyzer.from_settings(s)
    broker = RedisWorker(broker_config(redis_server.url), consumer="w")
    worker = BatchWorker(broker, analyzer)
    worker.start()
    try:
        with serving(s) as served:
            got, summary = await call(served, audio)
    finally:
        await worker.stop()
        await broker.close()
    check_customer(got, audio)
    assert not voices(got, "agent")
    check_summary(summary, audio, agent_analysed=False)


# --- who may open a stream -------------------------------------------------------------

AUTH_TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "wss://calls.example.com/emostream"


@pytest.fixture(scope="module")
def signed(has_voice_model: ModelRepository) -> Iterator[Served]:  # noqa: F811
    twilio_config = {"auth_token": AUTH_TOKEN, "public_url": PUBLIC}
    with serving(settings(has_voice_model.root, twilio=twilio_config)) as served:
        yield served


async def _accepted(served: Served, headers: dict[str, str]) -> None:
    """The stream opens and runs a call's first messages."""
    async with twilio(served, headers) as t:
        await t.connected()
        await t.start(tracks=("inbound",))
        await t.media("inbound", 0, b"\xff" * CHUNK)
        await wait_for_session(served, STREAM)
        await t.stop()
        assert await t.closed() == (1000, "stream stopped")
    await wait_until_ended(served, STREAM)


async def _refused(served: Served, headers: dict[str, str], reason: str) -> None:
    before = protocol_errors(reason)
    with pytest.raises(InvalidStatus) as caught:
        async with twilio(served, headers):
            pass
    response = caught.value.response
    assert response.status_code == 403
    assert reason.encode() in response.body
    assert protocol_errors(reason) == before + 1
    assert served.sessions.get(STREAM) is None


async def test_a_good_signature_of_the_public_url_opens_the_stream(signed: Served) -> None:
    good = signature(AUTH_TOKEN, PUBLIC + "/v1/twilio")
    await _accepted(signed, {"X-Twilio-Signature": good})


async def test_a_signature_with_the_default_port_opens_the_stream_too(signed: Served) -> None:
    ported = signature(AUTH_TOKEN, "wss://calls.example.com:443/emostream/v1/twilio")
    await _accepted(signed, {"X-Twilio-Signature": ported})


async def test_a_bad_signature_is_refused_before_the_socket_opens(signed: Served) -> None:
    other_url = signature(AUTH_TOKEN, f"ws://127.0.0.1:{signed.port}/v1/twilio")
    other_token = signature("another-token", PUBLIC + "/v1/twilio")
    for bad in (other_url, other_token, "bm90IGEgc2lnbmF0dXJl"):
        await _refused(signed, {"X-Twilio-Signature": bad}, "bad_signature")


async def test_a_missing_signature_is_refused(signed: Served) -> None:
    await _refused(signed, {}, "no_signature")
    await _refused(signed, {"Authorization": "Bearer anything"}, "no_signature")


async def test_without_public_url_the_signed_url_is_the_one_requested(
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    s = settings(has_voice_model.root, twilio={"auth_token": AUTH_TOKEN})
    with serving(s) as served:
        good = signature(AUTH_TOKEN, served.ws)
        await _accepted(served, {"X-Twilio-Signature": good})
        wrong = signature(AUTH_TOKEN, PUBLIC + "/v1/twilio")
        await _refused(served, {"X-Twilio-Signature": wrong}, "bad_signature")


async def test_signed_streams_belong_to_the_owner_token(
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    server = {"api_tokens": ["supervisor-token", "other-token"]}
    config = {"auth_token": AUTH_TOKEN, "owner_token": "supervisor-token"}
    with serving(settings(has_voice_model.root, server=server, twilio=config)) as served:
        good = {"X-Twilio-Signature": signature(AUTH_TOKEN, served.ws)}
        await _refused(served, {"Authorization": "Bearer supervisor-token"}, "no_signature")
        async with twilio(served, good) as t:
            await t.start(tracks=("inbound",))
            await wait_for_session(served, STREAM)
            async with served.client("supervisor-token") as owner:
                assert (await owner.get(f"/v1/sessions/{STREAM}/summary")).status_code == 200
            async with served.client("other-token") as other:
                assert (await other.get(f"/v1/sessions/{STREAM}/summary")).status_code == 404
            await t.stop()
            assert (await t.closed())[0] == 1000
        await wait_until_ended(served, STREAM)


@pytest.fixture(scope="module")
def tokens(has_voice_model: ModelRepository) -> Iterator[Served]:  # noqa: F811
    server = {"api_tokens": ["alice-token", "bob-token"]}
    quota = {"max_sessions_per_owner": 1}
    with serving(settings(has_voice_model.root, server=server, session=quota)) as served:
        yield served


async def test_with_api_tokens_a_stream_needs_one(tokens: Served) -> None:
    await _refused(tokens, {}, "no_token")
    await _refused(tokens, {"Authorization": "Bearer mallory"}, "unauthorized")
    await _accepted(tokens, {"Authorization": "Bearer alice-token"})


async def test_the_api_token_owns_the_stream_session(tokens: Served) -> None:
    async with twilio(tokens, {"Authorization": "Bearer alice-token"}) as t:
        await t.start(tracks=("inbound",))
        await wait_for_session(tokens, STREAM)
        async with tokens.client("alice-token") as alice, tokens.client("bob-token") as bob:
            assert (await alice.get(f"/v1/sessions/{STREAM}")).status_code == 200
            assert (await bob.get(f"/v1/sessions/{STREAM}")).status_code == 404
            status = (await alice.get(f"/v1/sessions/{STREAM}")).json()
        assert status["transport"] == "twilio" and status["twilio"]["call_sid"] == CALL
        await t.stop()
        assert (await t.closed())[0] == 1000
    await wait_until_ended(tokens, STREAM)


async def test_one_token_cannot_take_more_than_its_quota(tokens: Served) -> None:
    before = protocol_errors("quota")
    alice = {"Authorization": "Bearer alice-token"}
    async with twilio(tokens, alice) as first:
        await first.start(tracks=("inbound",))
        await wait_for_session(tokens, STREAM)
        async with twilio(tokens, alice, "MZsecond") as second:
            await second.start(tracks=("inbound",))
            code, reason = await second.closed()
        assert code == 1008 and reason and "each may hold 1" in reason
        assert protocol_errors("quota") == before + 1
        async with twilio(tokens, {"Authorization": "Bearer bob-token"}, "MZbob") as other:
            await other.start(tracks=("inbound",))
            await wait_for_session(tokens, "MZbob")  # another token has its own quota
            await other.stop()
            assert (await other.closed())[0] == 1000
        await first.stop()
        assert (await first.closed())[0] == 1000
    await wait_until_ended(tokens, STREAM)
    await wait_until_ended(tokens, "MZbob")
