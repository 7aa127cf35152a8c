"""A Genesys AudioHook call, end to end: real RAVDESS speech on both channels of a stereo
8 kHz μ-law stream, through ``GET /v1/audiohook`` on a real server, the real voice models
and the embedded (or Redis) broker, to SSE and the call's summary.

The customer (``external``) says one sentence between silences, the agent (``internal``)
another. With the default role policy (``calls.analyse_roles`` = customer, unknown) only
the customer is analysed: voice messages for its speech (with a label) and its silences
(without), none for the agent, whose audio is only counted. With agents analysed they get
messages of their own, with role ``agent``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from emostream.bench.procs import free_port
from emostream.broker.redis_worker import RedisWorker
from emostream.models.batching import BatchWorker
from emostream.models.repository import ModelRepository
from emostream.models.voice import VoiceAnalyzer
from emostream.settings import Settings
from emostream.stream.audio import read_audio

from audiohook_client import GUARD_S, Running, serving, session
from brokers import broker_config
from redis_server import RedisServer
from voice_models import CLIP, has_voice_model, ravdess, voice_repo  # noqa: F401

KEY = "genesys-test-key"
TOKEN = "supervisor-token"
#: The agent's sentence: actor 2, happy, strong intensity.
OTHER = "Actor_02/03-01-03-02-01-01-02.flac"
#: real time is not under test here: a loaded machine must not drop what it is slow with
PATIENT = {"deadline_ms": 600_000, "voice_deadline_ms": 600_000}
RATE = 8000


def _call(ravdess: Path) -> tuple[np.ndarray, float, float]:  # noqa: F811
    """The call as ``(samples, 2)`` int16 at 8 kHz (external, internal), the customer's
    speech between 2 s of silence on each side, the agent's after 3 s; and when the
    customer's clip starts and ends."""
    customer = read_audio(ravdess / CLIP, rate=RATE)
    agent = read_audio(ravdess / OTHER, rate=RATE)
    lead = 2 * RATE
    length = max(lead + len(customer), 3 * RATE + len(agent)) + 2 * RATE
    pcm = np.zeros((length, 2), np.float32)
    pcm[lead : lead + len(customer), 0] = customer
    pcm[3 * RATE : 3 * RATE + len(agent), 1] = agent
    pcm = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
    return pcm, lead / RATE, (lead + len(customer)) / RATE


def _settings(root: Path, **kw: Any) -> Settings:
    calls = kw.pop("calls", {})
    return Settings(
        model_root=root,
        log_level="warning",
        server={"port": free_port(), **kw.pop("server", {})},
        broker={**PATIENT, **kw.pop("broker", {})},
        audiohook={"api_keys": {KEY: ""}, **kw.pop("audiohook", {})},
        calls=calls,
        **kw,
    )


async def _events(http: httpx.AsyncClient, sid: str, subscribed: asyncio.Event) -> list[dict]:
    """Every message of the session's SSE stream, until its end."""
    got: list[dict] = []
    async with http.stream("GET", f"/v1/sessions/{sid}/events") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            subscribed.set()  # the first line is the stream's opening comment
            if line.startswith("data: ") and line != "data: {}":  # {}: the end marker
                got.append(json.loads(line[6:]))
    return got


async def _stream_call(
    live: Running, pcm: np.ndarray, token: str | None = None
) -> tuple[list[dict], dict[str, Any], str]:
    """The call from ``open`` to ``closed``; its messages (SSE) and its summary after."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(
            base_url=live.base, headers=headers, trust_env=False, timeout=GUARD_S
        ) as http,
        session(live.port, KEY) as c,
    ):
        opened = await c.open()
        assert opened["parameters"]["media"][0]["channels"] == ["external", "internal"]
        subscribed = asyncio.Event()
        reading = asyncio.create_task(_events(http, c.id, subscribed))
        async with asyncio.timeout(GUARD_S):
            await subscribed.wait()
        await c.stream(pcm)  # 100 ms frames at 10x real time
        closed = await c.close()
        assert closed["clientseq"] == c.seq
        async with asyncio.timeout(120):
            messages = await reading
        response = await http.get(f"/v1/sessions/{c.id}/summary")
        assert response.status_code == 200, response.text
        return messages, response.json(), c.id


def _check_customer(voices: list[dict], start: float, end: float) -> None:
    customer = [v for v in voices if v["track"] == "external"]
    assert customer and all(v["role"] == "customer" for v in customer)
    speech = [v for v in customer if v["speech"]]
    silent = [v for v in customer if not v["speech"]]
    assert speech and all(v["label"] and v["scores"] for v in speech)
    assert silent and all(v.get("label") is None and not v.get("scores") for v in silent)
    assert any(v["end"] <= start for v in silent), "the silence before the customer speaks"
    assert all(start - 1.5 < v["start"] < end for v in speech), "speech only where it is"


def _check_summary(summary: dict[str, Any], sid: str, seconds: float) -> None:
    assert summary["session"] == sid and summary["transport"] == "audiohook"
    assert summary["ended"] is not None
    ids = summary["ids"]
    assert ids["conversationId"] and ids["organizationId"] and ids["correlationId"]
    customer = summary["roles"]["customer"]
    assert customer["analysed"] is True and customer["windows"] > 0
    assert customer["tracks"] == ["external"] and customer["dominant"]
    assert customer["audio_s"] == pytest.approx(seconds, abs=0.6)


@pytest.fixture(scope="module")
def call(ravdess: Path) -> tuple[np.ndarray, float, float]:  # noqa: F811
    return _call(ravdess)


@pytest.fixture()
def default_policy(has_voice_model: ModelRepository) -> Iterator[Running]:  # noqa: F811
    settings = _settings(
        has_voice_model.root,
        server={"api_tokens": [TOKEN]},
        audiohook={"owner_token": TOKEN},
    )
    with serving(settings) as live:
        yield live


async def test_a_call_gets_customer_messages_and_a_summary_and_agents_stay_unanalysed(
    default_policy: Running, call: tuple[np.ndarray, float, float]
) -> None:
    pcm, start, end = call
    messages, summary, sid = await _stream_call(default_policy, pcm, token=TOKEN)
    voices = [m for m in messages if m["type"] == "voice"]
    assert all(m["session"] == sid for m in voices)
    assert not [v for v in voices if v["track"] == "internal" or v["role"] == "agent"]
    _check_customer(voices, start, end)
    _check_summary(summary, sid, len(pcm) / RATE)
    agent = summary["roles"]["agent"]
    assert agent["analysed"] is False and agent["tracks"] == ["internal"]
    assert agent["audio_s"] == pytest.approx(len(pcm) / RATE, abs=0.01), "counted, not decoded"
    assert "windows" not in agent and "classes" not in agent
    async with httpx.AsyncClient(base_url=default_policy.base, trust_env=False) as stranger:
        r = await stranger.get(f"/v1/sessions/{sid}/summary")
    assert r.status_code == 401, "a closed server's call belongs to audiohook.owner_token"


@pytest.fixture()
def agents_analysed(has_voice_model: ModelRepository) -> Iterator[Running]:  # noqa: F811
    settings = _settings(has_voice_model.root, calls={"analyse_roles": "customer,agent"})
    with serving(settings) as live:
        yield live


async def test_with_agents_analysed_the_agent_gets_messages_of_its_own(
    agents_analysed: Running, call: tuple[np.ndarray, float, float]
) -> None:
    pcm, start, end = call
    messages, summary, sid = await _stream_call(agents_analysed, pcm)
    voices = [m for m in messages if m["type"] == "voice"]
    _check_customer(voices, start, end)
    agent = [v for v in voices if v["track"] == "internal"]
    assert agent and all(v["role"] == "agent" for v in agent)
    assert any(v["speech"] and v["label"] for v in agent)
    _check_summary(summary, sid, len(pcm) / RATE)
    assert summary["roles"]["agent"]["analysed"] is True
    assert summary["roles"]["agent"]["windows"] > 0


async def test_a_call_through_redis_and_a_separate_worker(
    redis_server: RedisServer,
    has_voice_model: ModelRepository,  # noqa: F811
    call: tuple[np.ndarray, float, float],
) -> None:
    """The same call on an ingest node whose voice windows a worker takes from Redis."""
    pcm, start, end = call
    url = redis_server.url
    settings = _settings(has_voice_model.root, broker={"url": url, "lost_after_s": 600.0})
    analyzer = VoiceAnalyzer.from_settings(Settings(model_root=has_voice_model.root))
    broker = RedisWorker(broker_config(url), consumer="w-audiohook")
    worker = BatchWorker(broker, analyzer)
    worker.start()
    try:
        with serving(settings) as live:
            messages, summary, sid = await _stream_call(live, pcm)
    finally:
        await worker.stop()
        await broker.close()
    voices = [m for m in messages if m["type"] == "voice"]
    assert not [v for v in voices if v["track"] == "internal"]
    _check_customer(voices, start, end)
    _check_summary(summary, sid, len(pcm) / RATE)
