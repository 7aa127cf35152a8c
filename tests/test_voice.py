"""The voice analyzer on the real voice model (skipped, saying what trains it, until one
exists), its failure isolation in ``run_batch``, the check of an audio card, and voice
reported unavailable (never faked) without a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream import metrics
from emostream.models.check import ModelRefused, load_checked
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier
from emostream.models.voice import VoiceAnalyzer, VoiceService
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.outcomes import Failed, Scored, VoiceScores
from emostream.settings import Settings

from brokers import dropped, voice_job
from voice_models import VOICE, clip, has_voice_model, ravdess, voice_repo  # noqa: F401


@pytest.fixture(scope="module")
def voice(has_voice_model: ModelRepository) -> VoiceAnalyzer:  # noqa: F811
    return VoiceAnalyzer.from_settings(Settings(model_root=has_voice_model.root))


def _windows(clip: np.ndarray, n: int, size: int) -> list[np.ndarray]:  # noqa: F811
    x = np.tile(clip, 3)
    return [x[i * 8000 : i * 8000 + size].copy() for i in range(n)]


def test_voice_without_a_model_is_unavailable_with_the_train_command(tmp_path: Path) -> None:
    service = VoiceService.load(Settings(model_root=tmp_path))
    assert service.analyzer is None and service.vad is None
    assert service.unavailable is not None
    assert "emostream train voice --data" in service.unavailable
    assert service.status() == {"available": False, "reason": service.unavailable}


def test_voice_off_loads_nothing(tmp_path: Path) -> None:
    service = VoiceService.load(Settings(model_root=tmp_path, voice={"enabled": False}))
    assert service.analyzer is None and "voice.enabled" in (service.unavailable or "")


def test_a_face_model_is_not_a_voice_model(classifier: Classifier) -> None:
    with pytest.raises(TypeError, match="not audio"):
        VoiceAnalyzer(classifier)


def test_the_serving_check_refuses_a_face_card_as_voice(voice_repo: ModelRepository) -> None:  # noqa: F811
    with pytest.raises(ModelRefused, match="cannot score voice"):
        load_checked(voice_repo, "face-emotion", voice_repo.resolve("face-emotion"), None, "voice")
    with pytest.raises(ModelRefused):  # the VAD is an audio model, but not a classifier
        load_checked(voice_repo, "voice-activity", "1", None, "voice")


def test_the_serving_check_passes_the_voice_model(has_voice_model: ModelRepository) -> None:  # noqa: F811
    version = has_voice_model.resolve(VOICE)
    classifier = load_checked(has_voice_model, VOICE, version, None, "voice")
    assert classifier.card.modality == "voice"


def test_real_windows_are_scored_in_one_batch(voice: VoiceAnalyzer, clip: np.ndarray) -> None:  # noqa: F811
    waves = _windows(clip, 5, voice.spec.window_samples)
    jobs = [voice_job("s", i, w) for i, w in enumerate(waves)]
    outcomes = run_batch(voice, jobs)
    assert all(isinstance(o, Scored) for o in outcomes)
    rows = []
    for job, o in zip(jobs, outcomes, strict=True):
        assert isinstance(o, Scored) and isinstance(o.result, VoiceScores)
        assert o.job.key == job.key and o.model == voice.model
        assert o.result.classes == tuple(voice.card.classes)
        assert o.result.scores.shape == (1, len(voice.classes))
        assert abs(float(o.result.scores.sum()) - 1) < 1e-3
        rows.append(o.result.scores[0])
    alone = run_batch(voice, [jobs[2]])[0]
    assert isinstance(alone, Scored)
    assert np.allclose(alone.result.scores[0], rows[2], atol=1e-4)  # batching changes nothing


def test_bad_windows_fail_alone(voice: VoiceAnalyzer, clip: np.ndarray) -> None:  # noqa: F811
    n = voice.spec.window_samples
    good = _windows(clip, 2, n)
    nan = good[0].copy()
    nan[100] = np.nan
    jobs = [
        voice_job("s", 0, good[0]),
        voice_job("s", 1, (good[0] * 32767).astype(np.int16)),  # PCM, not float32
        voice_job("s", 2, good[0][: n // 2]),  # too short
        voice_job("s", 3, nan),
        voice_job("s", 4, np.stack([good[0], good[1]])),  # 2-D
        voice_job("s", 5, good[1], rate=8000),  # not the model's rate
        voice_job("s", 6, good[1]),
    ]
    before = dropped("error", "voice")
    outcomes = run_batch(voice, jobs)
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == ["Scored", "Failed", "Failed", "Failed", "Failed", "Failed", "Scored"]
    assert dropped("error", "voice") - before == 5
    reasons = [o.error for o in outcomes if isinstance(o, Failed)]
    assert "float32" in reasons[0] and "samples" in reasons[1] and "NaN" in reasons[2]
    assert "8000 Hz" in reasons[4]


def test_voice_predictions_are_counted_for_the_voice_model(
    voice: VoiceAnalyzer,
    clip: np.ndarray,  # noqa: F811
) -> None:
    card = voice.card

    def total() -> float:
        return sum(
            metrics.PREDICTIONS.labels(card.name, card.version, "voice", c)._value.get()  # type: ignore[attr-defined]
            for c in card.classes
        )

    before = total()
    waves = _windows(clip, 3, voice.spec.window_samples)
    run_batch(voice, [voice_job("s", i, w) for i, w in enumerate(waves)])
    assert total() - before == 3


def test_drift_of_the_voice_model_is_measured_against_its_card(
    voice: VoiceAnalyzer,
    clip: np.ndarray,  # noqa: F811
) -> None:
    """The drift gauges exist for the voice model and follow its own window and reference."""
    from prometheus_client import REGISTRY

    card = voice.card
    assert card.reference_distribution is not None, "the voice card carries its reference"
    labels = {"model": card.name, "version": card.version, "modality": "voice"}
    before = REGISTRY.get_sample_value("emostream_drift_window_samples", labels) or 0.0
    waves = _windows(clip, 4, voice.spec.window_samples)
    run_batch(voice, [voice_job("s", i, w) for i, w in enumerate(waves)])
    after = REGISTRY.get_sample_value("emostream_drift_window_samples", labels)
    assert after == before + 4
    assert REGISTRY.get_sample_value("emostream_drift_reference_missing", labels) == 0
    js = REGISTRY.get_sample_value("emostream_drift_js_distance", labels)
    assert js is not None and 0.0 <= js <= 1.0
