"""The stages of a face training run, as ``emostream train`` and ``dvc repro`` call them.

prepare (data -> ``.npz``) -> fit (checkpoint, history, MLflow run) -> evaluate (report and
PNGs on val) -> export (ONNX with a parity check, a new repository version with its card,
an MLflow model version). Each stage reads and writes one run folder, so any stage can be
re-run alone, and ``run.json`` there carries the MLflow run id from stage to stage.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from emostream.models.card import (
    FACE_EMOTION_USE,
    Evaluation,
    ImageInput,
    ModelCard,
    Output,
    Source,
)
from emostream.models.repository import ModelRepository
from emostream.training.evaluate import Report
from emostream.training.face_config import TrainConfig
from emostream.training.face_data import SIZE, Split, read, save_npz
from emostream.training.face_export import INPUT, OUTPUT
from emostream.training.fer2013 import CLASSES
from emostream.training.loop import EpochHook
from emostream.training.mlflow_store import Tracking

if TYPE_CHECKING:
    from emostream.training.face_trainer import Teacher

from emostream.training.runs import (
    EXPORT_FILE,
    RUN_FILE,
    epoch_logger,
    fitting,
    history_png,
    publish,
    record_fit,
    resumable,
    run_info,
    write_info,
)

__all__ = ["EXPORT_FILE", "RUN_FILE", "combine", "evaluate", "export", "fit", "prepare", "run_info"]

log = logging.getLogger(__name__)

#: the detector box is grown by this much on each side: FER2013's faces include some hair,
#: chin and background, as the imported model's crops do
CROP_MARGIN = 0.1


def prepare(data: Path, out: Path, progress: bool = True) -> dict[str, Split]:
    """Decode the data once into one compressed array file (the DVC-tracked input)."""
    splits = read(data, progress)
    save_npz(splits, out)
    return splits


def limited(train: Split, cfg: TrainConfig) -> Split:
    """The faces a fit trains on: all of train, or with ``data.limit`` (``--limit``) a
    seeded random draw of that many (each class keeps about its share); val is never
    limited. Says which on the log."""
    drawn = train.limit(cfg.data.limit, cfg.seed)
    held = f"{cfg.data.holdout:.0%} of them held out for early stopping"
    if len(drawn) < len(train):
        log.info(
            "training on %d of %d train faces (data.limit: a seeded random draw); %s; "
            "val unlimited",
            len(drawn),
            len(train),
            held,
        )
    else:
        log.info("training on all %d train faces; %s", len(train), held)
    return drawn


def fit(
    data: Path,
    run_dir: Path,
    cfg: TrainConfig,
    tracking: Tracking,
    progress: bool = True,
    run_name: str | None = None,
    on_epoch: EpochHook | None = None,
    *,
    splits: dict[str, Split] | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train on the train split (``splits`` when the caller has read ``data`` already);
    every epoch's figures go to the MLflow run as they come (and to ``on_epoch``, which may
    raise to stop the run: Optuna's pruning). A stopped fit in ``run_dir`` (``last.pt``)
    goes on where it stopped, in its MLflow run, unless ``fresh``."""
    from emostream.training.face_trainer import Trainer

    prior = resumable(run_dir, cfg, fresh)
    splits = read(data, progress) if splits is None else splits
    train = limited(splits["train"], cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, progress)
    with fitting(run_dir, cfg, tracking, run_name or run_dir.name, prior) as mlrun:
        if prior is None:
            (run_dir / "config.yaml").write_text(cfg.to_yaml())
            mlrun.params(cfg.flat())
            mlrun.params(
                {
                    "data.path": str(data),
                    "data.train_faces": len(train),
                    "data.train_faces_available": len(splits["train"]),
                }
            )
            mlrun.tag("emostream.stage", "fit")
            mlrun.artifact(run_dir / "config.yaml")

        result = trainer.fit(
            train,
            on_epoch=epoch_logger(mlrun, on_epoch),
            teacher=teacher_of(cfg, progress),
            meta={"run_id": mlrun.run_id},
        )
        return record_fit(run_dir, mlrun, tracking, result, data, cfg.seed)


def teacher_of(cfg: TrainConfig, progress: bool) -> Teacher | None:
    """The ensemble of ``distill.teachers`` from the model repository, or None."""
    if not cfg.distill.teachers:
        return None
    from emostream.paths import model_root
    from emostream.training.distil import teacher_probs

    repo = ModelRepository(model_root())
    return lambda images: teacher_probs(repo, cfg.distill.teachers, images, CLASSES, progress)


def evaluate(
    run_dir: Path,
    data: Path,
    command: str,
    progress: bool = True,
    splits: dict[str, Split] | None = None,
) -> Report:
    """The served graph (with its mirror average) on all of val (``splits`` when the
    caller has read ``data`` already): report.json and the PNGs.

    report.json also holds the card's ``evaluation`` entry and reference distribution, so
    export copies the figures measured here rather than recomputing them."""
    import torch

    from emostream.training.face_net import to_input
    from emostream.training.face_trainer import load_served

    info = run_info(run_dir)
    served, cfg, _ = load_served(run_dir / "checkpoint.pt")
    val = (read(data, progress) if splits is None else splits)["val"]
    probs = []
    with torch.no_grad():
        for i in range(0, len(val), 512):
            probs.append(served(to_input(torch.from_numpy(val.images[i : i + 512]))).numpy())
    report = Report.from_probabilities(list(CLASSES), val.labels, np.concatenate(probs))
    title = f"{cfg.model_name} ({run_dir.name}), FER2013 val"
    figures = write_val_report(report, run_dir, title, command, tta_flip=cfg.net.tta_flip)
    history = _histories(run_dir)
    if history:
        (run_dir / "history.png").write_bytes(history_png(history, f"{cfg.model_name} training"))
    tracking = Tracking(info["tracking_uri"], None)
    with tracking.run(cfg.experiment, run_dir.name, info["run_id"]) as mlrun:
        mlrun.metrics({f"val_{k}": figures[k] for k in ("accuracy", "macro_f1", "ece")})
        mlrun.metrics({f"val_recall_{c}": v for c, v in report.per_class_recall().items()})
        for name in ("report.json", "confusion.png", "reliability.png", "history.png"):
            if (run_dir / name).is_file():
                mlrun.artifact(run_dir / name, "report")
    return report


def write_val_report(
    report: Report, out: Path, title: str, command: str, **extra: Any
) -> dict[str, Any]:
    """``report.json``, ``confusion.png`` and ``reliability.png`` of a face model on val, in
    ``out``; every face version's figures are written here, whatever scored it (PyTorch for
    a trained run, ONNX Runtime for a quantized one), so they compare like with like.

    ``extra`` goes into report.json before the card's ``evaluation`` entry."""
    (out / "confusion.png").write_bytes(report.confusion_png(title))
    (out / "reliability.png").write_bytes(report.reliability_png(title))
    figures: dict[str, Any] = {
        "accuracy": round(report.accuracy, 4),
        "macro_f1": round(report.macro_f1, 4),
        "ece": round(report.ece, 4),
        "samples": report.samples,
        "per_class_precision": report.per_class_precision(),
        "per_class_recall": report.per_class_recall(),
        "per_class_f1": report.per_class_f1(),
        "confusion": report.confusion.tolist(),
        "classes": list(report.classes),
        "predicted_distribution": report.predicted_distribution(),
        **extra,
        "evaluation": report.to_evaluation("FER2013", "val (PublicTest)", command).model_dump(
            mode="json"
        ),
    }
    (out / "report.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _describe(cfg: TrainConfig, info: dict[str, Any], members: int, passes: int) -> str:
    runs = info.get("members") or [info]
    trained = "; ".join(
        f"seed {m.get('seed')}: {m.get('epochs_run')} epochs, best {m.get('best_epoch')}"
        for m in runs
    )
    what = f"EmotionNet (compact VGG, width {cfg.net.width})"
    if members > 1:
        what = f"an ensemble of {members} {what} runs"
    views = ", each face averaged with its mirror image" if cfg.net.tta_flip else ""
    return (
        f"{what} trained by emostream train on FER2013 train ({trained}; "
        f"{info.get('device')} {info.get('precision')}); {passes} network passes per "
        f"face{views}"
    )


def combine(runs: list[Path], out: Path, tracking: Tracking) -> dict[str, Any]:
    """Several fitted runs as one ensemble run folder, to evaluate and export as one model."""
    from emostream.training.face_trainer import save_ensemble

    if len(runs) < 2:
        raise ValueError("combine needs at least two runs")
    infos = [run_info(r) for r in runs]
    if len({i["data"] for i in infos}) != 1:
        raise ValueError(f"the runs were trained on different data: {[i['data'] for i in infos]}")
    save_ensemble([r / "checkpoint.pt" for r in runs], out / "checkpoint.pt")
    cfg_text = (runs[0] / "config.yaml").read_text()
    (out / "config.yaml").write_text(cfg_text)
    cfg = TrainConfig.model_validate(yaml.safe_load(cfg_text))
    members = [
        {
            "run_id": i["run_id"],
            "seed": TrainConfig.model_validate(
                yaml.safe_load((r / "config.yaml").read_text())
            ).seed,
            "epochs_run": i["epochs_run"],
            "best_epoch": i["best_epoch"],
            "train_seconds": i["train_seconds"],
        }
        for r, i in zip(runs, infos, strict=True)
    ]
    with tracking.run(cfg.experiment, out.name) as mlrun:
        mlrun.tag("emostream.stage", "combine")
        mlrun.params({f"member.{k}.run_id": m["run_id"] for k, m in enumerate(members)})
        mlrun.artifact(out / "config.yaml")
        return write_info(
            out,
            run_id=mlrun.run_id,
            tracking_uri=tracking.uri,
            data=infos[0]["data"],
            members=members,
            epochs_run=sum(m["epochs_run"] for m in members),
            train_seconds=round(sum(m["train_seconds"] for m in members), 1),
            device=infos[0]["device"],
            precision=infos[0]["precision"],
        )


def _histories(run_dir: Path) -> dict[str, list[dict[str, float]]]:
    """Per-epoch figures of the run, or of each member of an ensemble, by label."""
    info = run_info(run_dir)
    if (run_dir / "history.json").is_file():
        return {f"seed {info.get('seed', '?')}": json.loads((run_dir / "history.json").read_text())}
    return {}


def build_card(
    cfg: TrainConfig,
    version: str,
    evaluation: Evaluation,
    reference: dict[str, float],
    info: dict[str, Any],
    members: int = 1,
    passes: int = 1,
) -> ModelCard:
    """The card of a trained version: how to feed it, where it came from, how it scored."""
    import emostream

    return ModelCard(
        name=cfg.model_name,
        version=version,
        task="face-emotion",
        modality="face",
        classes=list(CLASSES),
        input=ImageInput(
            name=INPUT,
            layout="NCHW",
            height=SIZE,
            width=SIZE,
            color="gray",
            scale=1.0 / 255.0,
            offset=0.0,
            interpolation="linear",
            crop_margin=CROP_MARGIN,
        ),
        output=Output(name=OUTPUT, kind="probabilities"),
        source=Source(
            kind="training",
            description=_describe(cfg, info, members, passes),
            package="emostream",
            version=emostream.__version__,
            authors="emostream",
            run_id=info.get("run_id"),
            data=info.get("data"),
        ),
        licence="MIT (emostream's code and these weights). The weights were trained on "
        "FER2013, released for research (ICML 2013 challenge): its terms apply to them; "
        "check them before any commercial use.",
        intended_use=FACE_EMOTION_USE,
        evaluation=[evaluation],
        reference_distribution=reference,
        sha256="",
        created=datetime.now(UTC),
        notes=[
            "Face crops: detector box grown by crop_margin on each side, gray, 48x48, "
            "pixel / 255 (FER2013's own framing).",
            f"Early stopping on {cfg.data.holdout:.0%} of train held out; val unseen until "
            "this evaluation.",
        ],
    )


def export(
    run_dir: Path,
    repo: ModelRepository,
    promote: bool = False,
    splits: dict[str, Split] | None = None,
) -> ModelCard:
    """ONNX (parity-checked on val faces: ``splits`` when the caller has read the run's
    data already) + card -> a new repository version and MLflow model version."""
    from emostream.training.face_export import parity, to_onnx
    from emostream.training.face_trainer import load_served

    info = run_info(run_dir)
    served, cfg, members = load_served(run_dir / "checkpoint.pt")
    figures = json.loads((run_dir / "report.json").read_text())
    evaluation = Evaluation.model_validate(figures["evaluation"])
    val = (read(Path(info["data"]), progress=False) if splits is None else splits)["val"]
    exported = parity(served, to_onnx(served, SIZE), val.images[:256])
    version = repo.next_version(cfg.model_name)
    card = build_card(
        cfg, version, evaluation, figures["predicted_distribution"], info, members, served.passes
    )
    extra = {
        "config.yaml": (run_dir / "config.yaml").read_bytes(),
        "report.json": (run_dir / "report.json").read_bytes(),
        "confusion.png": (run_dir / "confusion.png").read_bytes(),
        "reliability.png": (run_dir / "reliability.png").read_bytes(),
    }
    if (run_dir / "history.png").is_file():
        extra["history.png"] = (run_dir / "history.png").read_bytes()
    return publish(run_dir, repo, card, exported, extra, cfg.experiment, promote)
