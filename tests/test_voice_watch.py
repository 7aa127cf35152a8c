"""Hot promotion covers the voice model: its own slot and watcher, a checked version swapped
in, a bad one refused while the old one keeps serving."""

from __future__ import annotations

import shutil
from pathlib import Path

from emostream.models.repository import ModelRepository
from emostream.models.runner import RunnerConfig
from emostream.models.serving import ModelSlot
from emostream.models.voice import VoiceAnalyzer, VoiceModelConfig
from emostream.models.watch import ModelWatcher

from voice_models import VOICE, has_voice_model, voice_repo  # noqa: F401


def _copy_as(repo: ModelRepository, source: str, version: str, onnx: bytes | None = None) -> None:
    card = repo.card(VOICE, source).model_copy(update={"version": version})
    path = repo.version_dir(VOICE, source) / "model.onnx"
    repo.register(card, path.read_bytes() if onnx is None else onnx)


async def test_a_promoted_voice_version_is_served_and_a_bad_one_refused(
    has_voice_model: ModelRepository,  # noqa: F811
    tmp_path: Path,
) -> None:
    v = has_voice_model.resolve(VOICE)
    shutil.copytree(has_voice_model.version_dir(VOICE, v), tmp_path / VOICE / v)
    repo = ModelRepository(tmp_path)
    repo.set_alias(VOICE, v)
    good, bad = str(int(v) + 1), str(int(v) + 2)
    config = VoiceModelConfig()
    slot = ModelSlot(VoiceAnalyzer.load(repo, config, RunnerConfig()))
    watcher = ModelWatcher(slot, repo, config, shadow=True)
    assert not watcher.follows_shadow  # voice: production only
    await watcher.poll()
    assert slot.analyzer.model == f"{VOICE}/{v}"

    _copy_as(repo, v, good)
    repo.set_alias(VOICE, good)
    assert await watcher.poll()
    assert slot.analyzer.model == f"{VOICE}/{good}" and isinstance(slot.analyzer, VoiceAnalyzer)

    _copy_as(repo, v, bad, b"not an onnx graph\x00" * 64)
    repo.set_alias(VOICE, bad)
    assert await watcher.poll()
    assert slot.analyzer.model == f"{VOICE}/{good}"  # the old one keeps serving
    assert slot.refused["production"].version == bad
