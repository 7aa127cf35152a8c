"""``dvc repro`` rebuilds the face model from the data, and params.yaml keeps the defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emostream.models.repository import ModelRepository
from emostream.training.face_config import TrainConfig
from emostream.training.fer2013 import CLASSES

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")


def test_params_yaml_is_the_training_defaults() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["train"] == TrainConfig().model_dump(mode="json")


def test_every_stage_is_an_emostream_train_command_and_the_data_is_a_dependency() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["prepare", "train", "evaluate", "export"]
    assert all(s["cmd"].startswith("emostream train ") for s in stages.values())
    assert "${data.dir}" in stages["prepare"]["deps"]
    for stage in stages.values():
        for dep in stage["deps"]:
            if dep.startswith("training/"):
                assert (ROOT / dep).is_file(), dep


def _tiny_data(data_root: Path, dest: Path, per_class: int) -> Path:
    for split in ("train", "val"):
        for cls in CLASSES:
            src = sorted((data_root / "fer2013" / split / cls).glob("*.jpg"))[:per_class]
            (dest / split / cls).mkdir(parents=True)
            for f in src:
                shutil.copy(f, dest / split / cls / f.name)
    return dest


@pytest.mark.skipif(DVC is None, reason="dvc is not installed (the train extra brings it)")
def test_dvc_repro_runs_prepare_train_evaluate_export_for_real(
    data_root: Path, tmp_repo: ModelRepository, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "dvc.yaml", project)
    shutil.copytree(
        ROOT / "training", project / "training", ignore=shutil.ignore_patterns("__pycache__")
    )
    data = _tiny_data(data_root, tmp_path / "fer2013", per_class=20)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["dir"] = str(data)
    params["train"]["optim"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "EMOSTREAM_MODEL_ROOT": str(tmp_repo.root),
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        assert DVC is not None
        return subprocess.run(
            [DVC, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
        )

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert run("init", "-q").returncode == 0
    done = run("repro")
    assert done.returncode == 0, done.stdout + done.stderr
    for stage in ("prepare", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in done.stdout
    exported = json.loads((project / "runs/dvc/face/exported.json").read_text())
    assert tmp_repo.card("face-emotion", exported["version"]).source.kind == "training"
    report = json.loads((project / "runs/dvc/face/report.json").read_text())
    assert report["samples"] == 20 * len(CLASSES)
    again = run("repro")  # nothing changed: nothing re-runs
    assert again.returncode == 0 and "Running stage" not in again.stdout
