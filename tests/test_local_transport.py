"""The in-process transport: a session fed without WebRTC gets the same messages.

Proves that sessions do not depend on a peer connection: frames and PCM pushed through
``stream/transports/local.py`` go through the same conversion, windows, VAD, broker,
batching workers and message builders, and come out on the session's SSE fan-out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.app import AppState
from emostream.stream.session import Session
from emostream.stream.transports.local import add_track, open_local

from voice_models import clip, has_voice_model, ravdess, voice_repo  # noqa: F401

#: real time is not under test here: a loaded machine must not drop what it is slow with
PATIENT = {"deadline_ms": 600_000, "voice_deadline_ms": 600_000}


@pytest.fixture()
async def state(has_voice_model: ModelRepository) -> AsyncIterator[AppState]:  # noqa: F811
    s = Settings(model_root=has_voice_model.root, broker=PATIENT)
    app = AppState(s)
    await asyncio.to_thread(app.load)
    await app.start_realtime()
    try:
        yield app
    finally:
        await app.stop_realtime()


def _complete(got: list[dict]) -> bool:
    """A face message, a silent window and a speech window have come."""
    voices = [m for m in got if m["type"] == "voice"]
    return (
        any(m["type"] == "face" for m in got)
        and any(not v["speech"] for v in voices)
        and any(v["speech"] for v in voices)
    )


async def _messages(session: Session, timeout: float = 120.0) -> list[dict]:
    """The session's messages (as its SSE clients get them) until ``_complete``."""
    queue = session.subscribe()
    got: list[dict] = []
    async with asyncio.timeout(timeout):
        while not _complete(got):
            item = await queue.get()
            if item is None:
                break
            got.append(json.loads(item))
    return got


async def test_frames_and_pcm_from_a_local_track_become_face_and_voice_messages(
    state: AppState,
    media: Path,
    clip: np.ndarray,  # noqa: F811
) -> None:
    assert state.sessions is not None
    session = await open_local(state.sessions)
    reading = asyncio.create_task(_messages(session))
    camera = add_track(session, "cam", "video")
    mic = add_track(session, "mic", "audio", role="customer")
    image = cv2.imread(str(media / "justin.jpg"))
    for i in range(3):
        camera.push_image(image, pts=i / 15)
        await asyncio.sleep(0.05)
    pcm = (np.concatenate([np.zeros(32000, np.float32), clip]) * 32767).astype(np.int16)
    for start in range(0, len(pcm), 1600):  # 100 ms chunks at 16 kHz, 10x real time
        mic.push_pcm(pcm[start : start + 1600], 16000)
        await asyncio.sleep(0.01)  # a reader this far behind drops its oldest audio
    mic.end()
    got = await reading
    faces = [m for m in got if m["type"] == "face"]
    voices = [m for m in got if m["type"] == "voice"]
    assert faces and all(m["session"] == session.id for m in got)
    assert faces[0]["faces"] and faces[0]["model"].startswith("face-emotion/")
    assert [m["seq"] for m in faces] == sorted(m["seq"] for m in faces)
    assert any(not v["speech"] for v in voices), "the leading two seconds of silence"
    assert any(v["speech"] and v["label"] for v in voices), "the speech"
    assert {v["track"] for v in voices} == {"mic"}
    assert session.frames_in == 3 and session.transport == "local"
    summary = session.view.summary()
    assert summary["latency_ms"] is not None and "voice" in summary
    assert await state.sessions.end(session.id)
    assert state.sessions.get(session.id) is None


async def test_a_session_without_voice_says_so_once_and_keeps_reading(
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    s = Settings(model_root=has_voice_model.root, voice={"enabled": False}, broker=PATIENT)
    app = AppState(s)
    await asyncio.to_thread(app.load)
    await app.start_realtime()
    try:
        assert app.sessions is not None
        session = await open_local(app.sessions)
        queue = session.subscribe()
        for name in ("a", "b"):
            track = add_track(session, name, "audio")
            track.push_pcm(np.zeros(3200, np.int16), 16000)
            track.end()
        first = json.loads(await asyncio.wait_for(queue.get(), 30))
        assert first["type"] == "error" and first["code"] == "voice_unavailable"
        await asyncio.sleep(0.2)
        assert queue.empty(), "said once per session, not once per track"
        assert len(session.notices) == 1
        await app.sessions.end(session.id)
    finally:
        await app.stop_realtime()


async def test_an_idle_local_session_is_ended_by_the_reaper(
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    s = Settings(model_root=has_voice_model.root, session={"idle_timeout_s": 0.2})
    app = AppState(s)
    await asyncio.to_thread(app.load)
    await app.start_realtime()
    try:
        assert app.sessions is not None
        session = await open_local(app.sessions)
        add_track(session, "cam", "video")  # never fed
        async with asyncio.timeout(30):
            await session.closed.wait()
        assert app.sessions.get(session.id) is None
    finally:
        await app.stop_realtime()
