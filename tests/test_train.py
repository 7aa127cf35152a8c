"""``emostream train``: a tiny real run end to end, the config, the readers, the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("mlflow")

from fer_small import small_npz

from emostream.cli import app
from emostream.models.card import ModelCard
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier
from emostream.training import face_data
from emostream.training.face_config import ConfigError, load_config
from emostream.training.face_export import ParityError, parity, to_onnx
from emostream.training.face_net import EmotionNet, Served
from emostream.training.face_trainer import Trainer
from emostream.training.fer2013 import CLASSES
from emostream.training.mlflow_store import VERSION_TAG, Tracking
from emostream.training.registry import move_alias, rollback

runner = CliRunner()


@pytest.fixture(scope="module")
def small_data(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 real train faces and 200 real val faces as a prepared .npz."""
    return small_npz(data_root, tmp_path_factory, 400, 200)


def test_a_tiny_real_run_makes_a_version_an_mlflow_run_and_the_alias(
    small_data: Path, tmp_repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_repo.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "face",
            "--data",
            str(small_data),
            "--run",
            str(run),
            "--epochs",
            "1",
            "--set",
            "optim.batch_size=64",
            "--promote",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    exported = json.loads((run / "exported.json").read_text())
    version = exported["version"]
    assert version == "2"  # after the imported version 1
    card = tmp_repo.card("face-emotion", version)
    assert card.source.kind == "training" and card.source.run_id == info["run_id"]
    assert card.classes == list(CLASSES)
    ev = card.evaluation[0]
    assert ev.samples == 200 and ev.macro_f1 is not None and ev.ece is not None
    assert ev.per_class_precision is not None and set(ev.per_class_precision) == set(CLASSES)
    assert card.reference_distribution is not None
    assert sum(card.reference_distribution.values()) == pytest.approx(1.0, abs=1e-3)
    assert "FER2013" in card.licence
    folder = tmp_repo.version_dir("face-emotion", version)
    for name in ("confusion.png", "reliability.png", "check.npz", "config.yaml", "report.json"):
        assert (folder / name).stat().st_size > 0, name
    # the ONNX file loads where serving loads it, and answers as its export recorded
    clf = Classifier.from_repository(tmp_repo, "face-emotion", "production")
    assert clf.card.version == version
    with np.load(folder / "check.npz") as z:
        np.testing.assert_allclose(clf.predict_tensor(z["inputs"]), z["outputs"], atol=1e-5)
    # MLflow: the run's per-epoch metrics and artefacts, the registry entry and its alias
    tracking = Tracking.for_repository(tmp_repo.root)
    client = tracking.client
    mlrun = client.get_run(info["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert {"train_loss", "holdout_accuracy", "val_accuracy", "val_macro_f1"} <= set(
        mlrun.data.metrics
    )
    assert mlrun.data.params["optim.batch_size"] == "64"
    assert [m.step for m in client.get_metric_history(info["run_id"], "train_loss")] == [1]
    arts = {a.path for a in client.list_artifacts(info["run_id"], "model")}
    assert {"model/model.onnx", "model/model.json", "model/check.npz"} <= arts
    reports = {a.path for a in client.list_artifacts(info["run_id"], "report")}
    assert {"report/confusion.png", "report/reliability.png", "report/report.json"} <= reports
    assert tracking.alias("face-emotion", "production") == version
    assert tmp_repo.resolve("face-emotion") == version
    mv = client.get_model_version_by_alias("face-emotion", "production")
    assert mv.tags[VERSION_TAG] == version and mv.run_id == info["run_id"]
    assert str(mv.version) == exported["mlflow_version"]


def test_a_seeded_run_repeats_exactly(small_data: Path, tmp_path: Path) -> None:
    train = face_data.read(small_data, progress=False)["train"].limit(200, 0)
    cfg = load_config(None, ["optim.epochs=1", "optim.batch_size=50", "threads=1"])
    first = Trainer(cfg, tmp_path / "a", progress=False).fit(train).history
    second = Trainer(cfg, tmp_path / "b", progress=False).fit(train).history
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in first]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in second]


def test_config_file_then_overrides_and_every_mistake_named(tmp_path: Path) -> None:
    f = tmp_path / "train.yaml"
    f.write_text("train:\n  seed: 3\n  optim:\n    lr: 0.01\n    epochs: 5\n")
    cfg = load_config(f, ["optim.epochs=7", "net.tta_flip=false"])
    assert (cfg.seed, cfg.optim.lr, cfg.optim.epochs, cfg.net.tta_flip) == (3, 0.01, 7, False)
    assert cfg.flat()["optim.lr"] == 0.01
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="lr"):
        load_config(None, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(None, ["optim.lr"])
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_the_cli_refuses_bad_data_and_bad_settings_with_exit_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["train", "fit", "--data", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "expected FER2013" in missing.output
    bad = runner.invoke(
        app, ["train", "fit", "--data", str(tmp_path), "--set", "optim.epochs=many"]
    )
    assert bad.exit_code == 2 and "optim.epochs" in bad.output
    no_run = runner.invoke(app, ["train", "export", "--run", str(tmp_path)])
    assert no_run.exit_code == 2 and "not a training run folder" in no_run.output


def test_the_kaggle_csv_reads_into_the_same_class_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"]
    for label, usage in [(0, "Training"), (6, "Training"), (3, "PublicTest"), (4, "PrivateTest")]:
        pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
        rows.append(f"{label},{pixels},{usage}")
    f = tmp_path / "fer2013.csv"
    f.write_text("\n".join(rows) + "\n")
    splits = face_data.read(f, progress=False)
    assert [CLASSES[i] for i in splits["train"].labels] == ["angry", "neutral"]
    assert [CLASSES[i] for i in splits["val"].labels] == ["happy"]
    assert [CLASSES[i] for i in splits["test"].labels] == ["sad"]
    f.write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    with pytest.raises(face_data.DataError, match="row 2"):
        face_data.read(f, progress=False)
    f.write_text("a,b\n1,2\n")
    with pytest.raises(face_data.DataError, match="emotion,pixels,Usage"):
        face_data.read(f, progress=False)


def test_an_export_that_disagrees_with_pytorch_is_refused() -> None:
    served = Served([EmotionNet(len(CLASSES), width=8)], tta_flip=True).eval()
    other = Served([EmotionNet(len(CLASSES), width=8)], tta_flip=True).eval()
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    ok = parity(served, to_onnx(served), faces)
    assert ok.max_abs_diff < 1e-4 and ok.check_outputs.shape == (4 + 8, len(CLASSES))
    with pytest.raises(ParityError, match="export refused"):
        parity(served, to_onnx(other), faces)


def test_promote_and_rollback_move_mlflow_and_the_repository_together(
    tmp_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    card = tmp_repo.card("face-emotion", "1")
    onnx = tmp_repo.onnx_path("face-emotion", "1").read_bytes()
    tmp_repo.register(card.model_copy(update={"version": "2"}), onnx)
    tracking = Tracking.for_repository(tmp_repo.root)

    def agree() -> str:
        repo_says = tmp_repo.resolve("face-emotion")
        assert tracking.alias("face-emotion", "production") == repo_says
        return repo_says

    move_alias(tmp_repo, tracking, "face-emotion", "1")
    assert agree() == "1"
    move_alias(tmp_repo, tracking, "face-emotion", "2")
    assert agree() == "2"
    assert rollback(tmp_repo, tracking, "face-emotion") == "1"
    assert agree() == "1"

    def broken(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ModelRepository, "set_alias", broken)
    with pytest.raises(OSError, match="disk full"):
        move_alias(tmp_repo, tracking, "face-emotion", "2")
    assert agree() == "1"  # MLflow was put back


def test_a_card_without_the_new_figures_still_loads(tmp_repo: ModelRepository) -> None:
    raw = json.loads((tmp_repo.version_dir("face-emotion", "1") / "model.json").read_text())
    for ev in raw["evaluation"]:
        ev.pop("macro_f1", None)
        ev.pop("ece", None)
    assert ModelCard.model_validate(raw).evaluation[0].macro_f1 is None


def test_tune_runs_trials_as_mlflow_runs_and_writes_a_usable_config(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_path / "models"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "tune"
    args = ["tune", "face", "--data", str(small_data), "--out", str(out), "--trials", "2"]
    result = runner.invoke(app, [*args, "--epochs", "1", "--limit", "150"])
    assert result.exit_code == 0, result.output
    assert "best held-out accuracy" in result.output
    best = load_config(out / "best.yaml")
    assert best.optim.epochs == 1 and best.data.limit == 150
    tracking = Tracking.for_repository(tmp_path / "models")
    exp = tracking.client.get_experiment_by_name("face-emotion")
    runs = tracking.client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["tune-trial-0", "tune-trial-1"]
    assert all("holdout_accuracy" in r.data.metrics for r in runs)


def test_two_runs_combine_into_one_ensemble_version(
    small_data: Path, tmp_repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_repo.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["--data", str(small_data), "--epochs", "1", "--limit", "150"]
    for seed in (0, 1):
        fitted = runner.invoke(
            app,
            ["train", "fit", *base, "--run", str(tmp_path / f"s{seed}"), "--set", f"seed={seed}"],
        )
        assert fitted.exit_code == 0, fitted.output
    ens = tmp_path / "ensemble"
    runs = ["--run", str(tmp_path / "s0"), "--run", str(tmp_path / "s1")]
    assert runner.invoke(app, ["train", "combine", *runs, "--out", str(ens)]).exit_code == 0
    assert runner.invoke(app, ["train", "evaluate", "--run", str(ens)]).exit_code == 0
    done = runner.invoke(app, ["train", "export", "--run", str(ens)])
    assert done.exit_code == 0, done.output
    version = json.loads((ens / "exported.json").read_text())["version"]
    card = tmp_repo.card("face-emotion", version)
    assert (
        "ensemble of 2" in card.source.description and "4 network passes" in card.source.description
    )
    clf = Classifier.from_repository(tmp_repo, "face-emotion", version)
    with np.load(tmp_repo.version_dir("face-emotion", version) / "check.npz") as z:
        np.testing.assert_allclose(clf.predict_tensor(z["inputs"]), z["outputs"], atol=1e-5)
    one = runner.invoke(app, ["train", "combine", "--run", str(tmp_path / "s0"), "--out", str(ens)])
    assert one.exit_code == 2 and "at least two runs" in one.output


def test_models_promote_checks_first_and_moves_mlflow_with_the_repository(
    tmp_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_versions import copy_version, corrupt_version

    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_repo.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy_version(tmp_repo, "2")
    corrupt_version(tmp_repo, "3")
    tracking = Tracking.for_repository(tmp_repo.root)  # a local registry now exists
    promoted = runner.invoke(app, ["models", "promote", "face-emotion", "2"])
    assert promoted.exit_code == 0, promoted.output
    assert tmp_repo.resolve("face-emotion") == "2" == tracking.alias("face-emotion", "production")
    refused = runner.invoke(app, ["models", "promote", "face-emotion", "3"])
    assert refused.exit_code == 1 and "face-emotion/3 refused" in refused.output
    assert tmp_repo.resolve("face-emotion") == "2" == tracking.alias("face-emotion", "production")
    back = runner.invoke(app, ["models", "rollback", "face-emotion"])
    assert back.exit_code == 0, back.output
    assert tmp_repo.resolve("face-emotion") == "1" == tracking.alias("face-emotion", "production")
