"""An honest "unsure": a result under ``results.unsure_below`` keeps its label and scores and
says ``unsure: true`` (faces and voice windows alike), counted in Prometheus; the setting
reaches every place a message is made."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from emostream.pipeline.jobs import FrameInfo, Job, VoiceInfo
from emostream.pipeline.messages import face_message, silence_message, voice_message
from emostream.pipeline.outcomes import FaceScores, Scored, VoiceScores
from emostream.pipeline.results_config import ResultsConfig
from emostream.schema import parse_message
from emostream.settings import Settings

CLASSES = ("angry", "happy", "sad")


def _unsure_count(modality: str) -> float:
    value = REGISTRY.get_sample_value("emostream_unsure_results_total", {"modality": modality})
    return value or 0.0


def _faces(*rows: list[float]) -> Scored[FaceScores]:
    job = Job("s", 1, 0.0, np.zeros((1, 1), np.uint8), FrameInfo(64, 64))
    boxes = [(0, 0, 10, 10) for _ in rows]
    return Scored(job, "face-emotion/9", FaceScores(boxes, np.array(rows, np.float32), CLASSES))


def _window(row: list[float]) -> Scored[VoiceScores]:
    job = Job("s", 1, 0.0, np.zeros(8, np.float32), VoiceInfo("0", 0.0, 1.5))
    return Scored(job, "voice-emotion/9", VoiceScores(np.array([row], np.float32), CLASSES))


def test_a_face_under_the_threshold_is_unsure_and_keeps_its_label_and_scores() -> None:
    before = _unsure_count("face")
    msg = face_message(_faces([0.45, 0.3, 0.25], [0.1, 0.8, 0.1]), latency_s=0, unsure_below=0.5)
    guess, sure = msg.faces
    assert (guess.label, guess.confidence, guess.unsure) == ("angry", 0.45, True)
    assert guess.scores == {"angry": 0.45, "happy": 0.3, "sad": 0.25}
    assert (sure.label, sure.unsure) == ("happy", False)
    assert _unsure_count("face") == before + 1
    body = msg.to_dict()
    assert [f["unsure"] for f in body["faces"]] == [True, False]  # type: ignore[index]
    assert guess.text() == "unsure (angry? 0.45)" and sure.text() == "happy 0.80"


@pytest.mark.parametrize(
    ("threshold", "unsure"), [(0.0, False), (0.45, False), (0.4501, True), (1.0, True)]
)
def test_the_threshold_is_strict_and_zero_turns_it_off(threshold: float, unsure: bool) -> None:
    (face,) = face_message(_faces([0.45, 0.3, 0.25]), latency_s=0, unsure_below=threshold).faces
    assert face.unsure is unsure


def test_a_voice_window_says_it_too_and_silence_says_nothing() -> None:
    before = _unsure_count("voice")
    guess = voice_message(_window([0.2, 0.35, 0.45]), latency_s=0, unsure_below=0.5)
    sure = voice_message(_window([0.9, 0.05, 0.05]), latency_s=0, unsure_below=0.5)
    assert (guess.label, guess.unsure, sure.unsure) == ("sad", True, False)
    assert guess.scores == {"angry": 0.2, "happy": 0.35, "sad": 0.45}
    assert _unsure_count("voice") == before + 1
    assert guess.text() == "unsure (sad? 0.45)"
    silent = silence_message(VoiceInfo("0", 0.0, 1.5), latency_s=0)
    assert "unsure" not in silent.to_dict() and silent.text() == "no speech"


def test_a_message_from_an_older_server_reads_as_sure() -> None:
    old = parse_message(
        '{"schema": 1, "type": "face", "seq": 1, "latency_ms": 1.0, "faces": [{"box": '
        '[0, 0, 4, 4], "scores": {"happy": 0.4, "sad": 0.6}, "label": "sad", '
        '"confidence": 0.6}]}'
    )
    assert old.faces[0].unsure is False  # type: ignore[union-attr]


def test_the_setting_is_validated_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().results.unsure_below == ResultsConfig().unsure_below == 0.5
    monkeypatch.setenv("EMOSTREAM_RESULTS__UNSURE_BELOW", "0.35")
    assert Settings().results.unsure_below == 0.35
    for bad in ("1.5", "-0.1", "half"):
        monkeypatch.setenv("EMOSTREAM_RESULTS__UNSURE_BELOW", bad)
        with pytest.raises(ValidationError, match="unsure_below"):
            Settings()


async def test_sessions_build_their_messages_with_the_setting() -> None:
    from emostream.broker.memory import MemoryBroker
    from emostream.stream.server_config import SessionConfig
    from emostream.stream.session_manager import SessionManager

    broker = MemoryBroker()
    await broker.start()
    manager = SessionManager(broker, SessionConfig(), results=ResultsConfig(unsure_below=0.9))
    try:
        session = await manager.open()
        msg = session.view.message(_faces([0.85, 0.1, 0.05]))
        assert msg is not None and msg.faces[0].unsure  # type: ignore[union-attr]
    finally:
        await manager.close()
        await broker.close()
