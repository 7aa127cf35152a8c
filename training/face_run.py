"""The stages of a face training run, as ``emostream train`` and ``dvc repro`` call them.

prepare (data -> ``.npz``) -> fit (checkpoint, history, MLflow run) -> evaluate (report and
PNGs on val) -> export (ONNX with a parity check, a new repository version with its card,
an MLflow model version). Each stage reads and writes one run folder, so any stage can be
re-run alone, and ``run.json`` there carries the MLflow run id from stage to stage.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from emostream.training.face_config import TrainConfig
from emostream.training.face_data import Split, read, save_npz
from emostream.training.tracking import Tracking

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


def prepare(data: Path, out: Path, progress: bool = True) -> dict[str, Split]:
    """Decode the data once into one compressed array file (the DVC-tracked input)."""
    splits = read(data, progress)
    save_npz(splits, out)
    return splits


def run_info(run_dir: Path) -> dict[str, Any]:
    f = run_dir / RUN_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run folder (no {RUN_FILE})")
    info: dict[str, Any] = json.loads(f.read_text())
    return info


def _write_info(run_dir: Path, **update: Any) -> dict[str, Any]:
    f = run_dir / RUN_FILE
    info = json.loads(f.read_text()) if f.is_file() else {}
    info.update(update)
    f.write_text(json.dumps(info, indent=2) + "\n")
    return info


def fit(
    data: Path,
    run_dir: Path,
    cfg: TrainConfig,
    tracking: Tracking,
    progress: bool = True,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Train on the train split; every epoch's figures go to the MLflow run as they come."""
    from emostream.training.face_trainer import Trainer

    splits = read(data, progress)
    train = splits["train"].limit(cfg.data.limit, cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    trainer = Trainer(cfg, run_dir, progress)
    with tracking.run(cfg.experiment, run_name or run_dir.name) as mlrun:
        mlrun.params(cfg.flat())
        mlrun.params({"data.path": str(data), "data.train_faces": len(train)})
        mlrun.tag("emostream.stage", "fit")
        mlrun.artifact(run_dir / "config.yaml")
        result = trainer.fit(train, on_epoch=lambda e, m: mlrun.metrics(m, step=e))
        history = run_dir / "history.json"
        history.write_text(json.dumps(result.history, indent=2) + "\n")
        mlrun.artifact(history)
        mlrun.metrics(
            {"best_epoch": result.best_epoch, "train_seconds": result.seconds}
            | {f"best_{k}": v for k, v in result.best.items() if k != "score"}
        )
        mlrun.params({"resolved.device": result.device, "resolved.precision": result.precision})
        return _write_info(
            run_dir,
            run_id=mlrun.run_id,
            tracking_uri=tracking.uri,
            data=str(data),
            best_epoch=result.best_epoch,
            epochs_run=len(result.history),
            train_seconds=round(result.seconds, 1),
            device=result.device,
            precision=result.precision,
        )
