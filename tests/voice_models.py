"""The voice test setup: a model root with the real face models, Silero VAD pulled from its
pinned wheel, and the real voice-emotion model where one has been trained (else the tests
that need it skip, saying what trains it); RAVDESS clips from the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.models.repository import ModelRepository
from emostream.models.vad.silero_import import import_silero
from emostream.models.voice import VoiceModelConfig
from emostream.stream.audio import read_audio

VOICE = "voice-emotion"
NO_VOICE = (
    "no voice-emotion model in the repository yet: train it with `emostream train voice --data DIR`"
)
#: A RAVDESS clip: actor 1, angry, strong intensity (about 4 s, speech in the middle).
CLIP = "Actor_01/03-01-05-02-01-01-01.flac"


@pytest.fixture(scope="session")
def voice_repo(repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """The real repository's models, linked, plus voice-activity/1 from the silero wheel."""
    root = tmp_path_factory.mktemp("voice-models")
    for entry in repo.root.iterdir():
        if entry.is_dir() and (entry / "aliases.json").is_file():
            (root / entry.name).symlink_to(entry.resolve())
    out = ModelRepository(root)
    if "voice-activity" not in out.names():
        import_silero(out)
    return out


@pytest.fixture(scope="session")
def has_voice_model(voice_repo: ModelRepository) -> ModelRepository:
    """The repository, skipping the test when no voice-emotion model has been trained."""
    if VOICE not in voice_repo.names():
        pytest.skip(NO_VOICE)
    return voice_repo


@pytest.fixture(scope="session")
def ravdess(data_root: Path) -> Path:
    path = data_root / "ravdess"
    if not (path / CLIP).is_file():
        pytest.skip(f"{path / CLIP} missing (RAVDESS in the shared data)")
    return path


@pytest.fixture(scope="session")
def clip(ravdess: Path) -> np.ndarray:
    return read_audio(ravdess / CLIP)


def padded(samples: np.ndarray, seconds: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``seconds`` of silence on each side of ``samples``: digital silence, or white noise
    of RMS ``noise`` (3e-4: -70 dBFS)."""
    rng = np.random.default_rng(seed)
    pad = (rng.normal(0, 1, int(seconds * 16000)) * noise).astype(np.float32)
    return np.concatenate([pad, samples, pad])


def config(**kw: object) -> VoiceModelConfig:
    return VoiceModelConfig.model_validate(kw)
