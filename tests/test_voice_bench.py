"""`emostream bench voice` writes its section: both VADs measured, the model timed."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.bench.report import read_section
from emostream.models.repository import ModelRepository

from voice_models import has_voice_model, ravdess, voice_repo  # noqa: F401


def test_bench_voice_writes_its_section(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    has_voice_model: ModelRepository,  # noqa: F811
    ravdess: Path,  # noqa: F811
) -> None:
    from emostream.bench.voice import SECTION, run

    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(has_voice_model.root))
    out = tmp_path / "BENCHMARKS.md"
    text = run(out=out, clips=5)
    assert read_section(out, SECTION) == text
    for heading in ("Voice activity detection on RAVDESS", "Log-mel features and the voice model"):
        assert f"\n### {heading}" in text
    assert "| **silero voice-activity/1** |" in text  # the default, in bold
    assert all(f"| webrtc mode {m} |" in text for m in range(4))
    assert "model ms/window" in text and "Reading: in noise Silero" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 1 |", "| 8 |", "| 32 |"))]
    assert len(rows) == 3
