"""`serve` with the memory broker: a voice worker beside the face one, /readyz saying what
serves voice or why nothing does, faces unaffected by a missing voice model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from emostream.broker.memory import MemoryBroker
from emostream.models.repository import ModelRepository
from emostream.pipeline.jobs import Job, VoiceInfo
from emostream.pipeline.outcomes import Scored, SessionEvent, VoiceScores
from emostream.settings import Settings
from emostream.stream.app import AppState, create_app

from model_versions import model_root_copy
from voice_models import clip, has_voice_model, ravdess, voice_repo  # noqa: F401


def test_without_a_voice_model_faces_serve_and_readyz_says_why(
    repo: ModelRepository, tmp_path: Path
) -> None:
    root = model_root_copy(repo, tmp_path / "models").root
    with TestClient(create_app(Settings(model_root=root))) as client:
        body = client.get("/readyz").json()
    assert body["ready"] is True and body["models"]["face"]["model"]
    voice = body["models"]["voice"]
    assert voice["available"] is False
    assert "emostream train voice --data" in voice["reason"]


def test_readyz_names_the_voice_model_and_its_vad(has_voice_model: ModelRepository) -> None:  # noqa: F811
    with TestClient(create_app(Settings(model_root=has_voice_model.root))) as client:
        body = client.get("/readyz").json()
    voice = body["models"]["voice"]
    assert voice["available"] is True and voice["model"].startswith("voice-emotion/")
    assert voice["vad"] == "silero voice-activity/1" and voice["refused"] == {}


async def test_the_in_process_voice_worker_scores_a_window(
    has_voice_model: ModelRepository,  # noqa: F811
    clip: np.ndarray,  # noqa: F811
) -> None:
    state = AppState(Settings(model_root=has_voice_model.root))
    await asyncio.to_thread(state.load)
    await state.start_realtime()
    try:
        broker = state.broker
        assert isinstance(broker, MemoryBroker) and len(state.workers) == 2  # face, voice
        await broker.open_session("s")
        middle = len(clip) // 2
        window = clip[middle - 12000 : middle + 12000].copy()
        job = Job("s", 1, 1.0, window, VoiceInfo("mic", 1.0, 2.5))
        job.deadline = time.monotonic() + 60  # a loaded test machine is not real time
        await broker.submit(job)

        async def first() -> SessionEvent:
            async for event in broker.results("s"):
                return event
            raise AssertionError("results ended")

        event = await asyncio.wait_for(first(), 60)
    finally:
        await state.stop_realtime()
    assert isinstance(event, Scored) and isinstance(event.result, VoiceScores)
    assert event.job.window == VoiceInfo("mic", 1.0, 2.5)
    assert event.model == state.services["voice"].analyzer.model  # type: ignore[union-attr]
