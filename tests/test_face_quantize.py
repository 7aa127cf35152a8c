"""``emostream train face-quantize``: the real face-emotion/2 into int8, on real FER2013 faces.

Each run calibrates on 32 train faces and scores 300 val faces (a prepared .npz), a few
seconds on two cores; the repository is a private copy with face-emotion/1 and /2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("mlflow")
pytest.importorskip("onnx")

from fer_small import small_npz

from emostream.cli import app
from emostream.models.check import load_checked
from emostream.models.preprocess import prepare
from emostream.models.repository import BUNDLED_ROOT, ModelRepository
from emostream.training import face_data, face_quantize, onnx_quantize
from emostream.training.face_data import Split
from emostream.training.fer2013 import CLASSES
from emostream.training.mlflow_store import VERSION_TAG, Tracking

NAME = "face-emotion"
runner = CliRunner()


@pytest.fixture(scope="module")
def small_data(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 real train faces and 300 real val faces as a prepared .npz."""
    return small_npz(data_root, tmp_path_factory, 2000, 300)


@pytest.fixture()
def with_2(tmp_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> ModelRepository:
    """The private repository plus the shipped face-emotion/2, in production; the CLI and
    MLflow point at it."""
    shipped = BUNDLED_ROOT / NAME / "2"
    if not (shipped / "model.onnx").is_file():
        pytest.skip("face-emotion/2 does not ship in this checkout")
    shutil.copytree(shipped, tmp_repo.version_dir(NAME, "2"))
    tmp_repo.set_alias(NAME, "2")
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_repo.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_repo


def _cli(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "face-quantize", "--data", str(data), "--run", str(run), *extra]


def test_the_int8_copy_is_the_next_version_names_its_parent_and_leaves_production(
    with_2: ModelRepository, small_data: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, _cli(small_data, tmp_path / "run", "--calibration", "32"))
    assert result.exit_code == 0, result.output
    assert with_2.versions(NAME) == ["1", "2", "3"]
    assert with_2.resolve(NAME) == "2"  # production did not move
    card, parent = with_2.card(NAME, "3"), with_2.card(NAME, "2")
    assert card.source.parent == "face-emotion/2"
    assert card.source.description == (
        "int8 (ONNX Runtime static QDQ, per-channel) of face-emotion/2, calibrated on 32 "
        "FER2013 train faces"
    )
    assert (card.classes, card.input, card.output) == (parent.classes, parent.input, parent.output)
    assert card.reference_distribution == parent.reference_distribution
    report = json.loads((with_2.version_dir(NAME, "3") / "report.json").read_text())
    assert report["samples"] == card.evaluation[0].samples == 300
    assert report["accuracy"] == card.evaluation[0].accuracy
    assert 0.9 <= report["top1_agreement_with_parent"] <= 1.0
    assert report["calibration"]["split"] == "train" and report["calibration"]["faces"] == 32
    int8, fp32 = report["ms_per_face"]["int8"], report["ms_per_face"]["face-emotion/2"]
    assert set(int8) == set(fp32) == {"1", "8", "32"}
    files = {f.name for f in with_2.version_dir(NAME, "3").iterdir()}
    assert {"check.npz", "report.json", "confusion.png", "reliability.png", "config.yaml"} <= files
    load_checked(with_2, NAME, "3")  # the serving check passes, check.npz included
    tracking = Tracking.for_repository(with_2.root)
    versions = tracking.client.search_model_versions(f"name='{NAME}'")
    assert [v.tags[VERSION_TAG] for v in versions] == ["3"]
    assert tracking.alias(NAME, "production") is None  # nor in MLflow
    promoted = runner.invoke(app, ["models", "promote", NAME, "3"])
    assert promoted.exit_code == 0, promoted.output
    assert with_2.resolve(NAME) == "3" == tracking.alias(NAME, "production")


def test_a_drop_beyond_max_drop_exits_1_with_the_reason_and_registers_nothing(
    with_2: ModelRepository, small_data: Path, tmp_path: Path
) -> None:
    args = _cli(small_data, tmp_path / "run", "--calibration", "16", "--max-drop", "-100")
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "more than --max-drop -100; nothing was registered" in result.stderr
    assert "against the parent's" in result.stderr
    assert with_2.versions(NAME) == ["1", "2"] and with_2.resolve(NAME) == "2"
    client = Tracking.for_repository(with_2.root).client
    runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "accuracy_drop_points" in runs[0].data.metrics


def test_calibration_reads_train_faces_only(
    with_2: ModelRepository, small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the quantizer is fed: every tensor a train face, none a face only val has."""
    fed: list[np.ndarray] = []
    real = onnx_quantize.quantize_int8

    def spy(onnx: bytes, calibration: np.ndarray, *args: object, **kwargs: object) -> bytes:
        fed.append(calibration.copy())
        return real(onnx, calibration, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(face_quantize, "quantize_int8", spy)
    card = face_quantize.quantize(
        with_2,
        small_data,
        tmp_path / "run",
        Tracking.for_repository(with_2.root),
        version="2",
        calibration=48,
        max_drop=100.0,
        val_limit=64,
        speed_budget_s=0,
        progress=False,
    )
    assert card.version == "3" and len(fed) == 1 and len(fed[0]) == 48
    splits = face_data.read(small_data, progress=False)
    spec = with_2.card(NAME, "2").input

    def rows(split: Split) -> set[bytes]:
        return {r.tobytes() for r in prepare(list(split.images), spec)}  # type: ignore[arg-type]

    train, val = rows(splits["train"]), rows(splits["val"])
    seen = {r.tobytes() for r in fed[0]}
    assert seen <= train
    assert not seen & (val - train)


def test_the_calibration_sample_is_stratified_and_seeded() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(len(CLASSES)), [400, 15, 300, 700, 500, 450, 300])
    train = Split(rng.integers(0, 256, (len(labels), 48, 48), dtype=np.uint8), labels)
    sample = face_quantize.calibration_sample(train, 100, seed=0)
    counts = sample.counts()
    assert len(sample) == 100 and min(counts.values()) >= 1
    share = np.bincount(labels) / len(labels) * 100
    assert np.abs(np.array(list(counts.values())) - share).max() <= 1.0
    again = face_quantize.calibration_sample(train, 100, seed=0)
    assert np.array_equal(sample.images, again.images)
    other = face_quantize.calibration_sample(train, 100, seed=1)
    assert not np.array_equal(sample.images, other.images)
    assert len(face_quantize.calibration_sample(train, 10**6, seed=0)) == len(train)
    with pytest.raises(ValueError, match="at least one face"):
        face_quantize.calibration_sample(train, 0, seed=0)
