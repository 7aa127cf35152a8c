"""``emostream train face-quantize``: an int8 copy of a face-emotion version, as a new version.

With the detector on a schedule the classifier is the largest cost of a frame, and the int8
graph of face-emotion/2 runs about 2.7x faster on this CPU for a fraction of a point of
accuracy. The stage: calibrate on a seeded, class-stratified sample of FER2013 *train*
(never val, which is only scored), quantize (:mod:`onnx_quantize`), score both graphs on val
with ONNX Runtime into the same report every face version gets (:func:`write_val_report`),
refuse when accuracy falls more than ``max_drop`` points below the parent, then register the
next version number and its MLflow model version (:func:`runs.publish`) without moving
production: ``emostream models promote`` does that, after the serving check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from tqdm import tqdm

from emostream.models.card import Evaluation, ImageInput, ModelCard
from emostream.models.check import CHECK_ATOL
from emostream.models.preprocess import prepare
from emostream.models.repository import PRODUCTION, ModelRepository
from emostream.models.runner import Classifier, OnnxRunner, RunnerConfig
from emostream.training.evaluate import Report
from emostream.training.face_data import Split, read
from emostream.training.face_run import write_val_report
from emostream.training.fer2013 import CLASSES
from emostream.training.mlflow_store import Tracking
from emostream.training.onnx_export import Exported
from emostream.training.onnx_quantize import METHOD, quantize_int8
from emostream.training.onnx_speed import ms_per_input
from emostream.training.runs import derived_card, publish, write_info

DEFAULT_CALIBRATION = 512
DEFAULT_MAX_DROP = 1.0  # accuracy points below the parent on val
SPEED_BATCHES = (1, 8, 32)
#: face export's check inputs: the first real faces, then fixed noise (face_export.parity)
CHECK_FACES, CHECK_NOISE = 16, 8


class QuantizationRefused(RuntimeError):
    """The int8 graph lost too much accuracy against its parent: nothing was registered."""


@dataclass
class Scored:
    """Both graphs on val, and what the report says about the pair."""

    report: Report
    parent: Report

    @property
    def drop_points(self) -> float:
        """Accuracy points below the parent (negative: above it)."""
        return (self.parent.accuracy - self.report.accuracy) * 100.0

    @property
    def agreement(self) -> float:
        """Share of val faces whose top-1 class is the parent's."""
        return round(float(np.mean(self.report.predictions == self.parent.predictions)), 4)


def calibration_sample(train: Split, count: int, seed: int) -> Split:
    """``count`` train faces drawn without replacement in each class's share of train (at
    least one face of every class present), seeded: the same faces every run."""
    if count < 1:
        raise ValueError(f"calibration needs at least one face, got {count}")
    count = min(count, len(train))
    rng = np.random.default_rng(seed)
    counts = np.bincount(train.labels, minlength=len(CLASSES))
    present = np.flatnonzero(counts)
    share = np.maximum(1, np.floor(counts[present] / counts.sum() * count)).astype(int)
    while share.sum() < count:  # hand out what rounding down left, largest remainder first
        gap = counts[present] / counts.sum() * count - share
        share[int(np.argmax(np.where(share < counts[present], gap, -np.inf)))] += 1
    while share.sum() > count:  # more classes than faces asked for: drop from the largest
        share[int(np.argmax(share))] -= 1
    picked = [
        rng.choice(np.flatnonzero(train.labels == k), size=n, replace=False)
        for k, n in zip(present, share, strict=True)
        if n > 0
    ]
    return train.take(np.sort(np.concatenate(picked)))


def served_scores(
    onnx: bytes, card: ModelCard, inputs: np.ndarray, desc: str, progress: bool
) -> np.ndarray:
    """Probabilities of the graph on preprocessed inputs, as serving computes them."""
    classifier = Classifier(card, OnnxRunner(onnx))
    out = []
    with tqdm(total=len(inputs), desc=desc, unit="face", disable=not progress) as bar:
        for i in range(0, len(inputs), 256):
            out.append(classifier.predict_tensor(inputs[i : i + 256]))
            bar.update(len(out[-1]))
    return np.asarray(np.concatenate(out))


def _speed(graphs: dict[str, bytes], one: np.ndarray, budget_s: float) -> dict[str, Any]:
    """ms per face of each graph at :data:`SPEED_BATCHES` on one thread ({} if no budget)."""
    if budget_s <= 0:
        return {}
    times = {k: ms_per_input(g, one, SPEED_BATCHES, budget_s=budget_s) for k, g in graphs.items()}
    return {"threads": 1, "onnxruntime": onnxruntime.__version__, **times}


def _check_file(int8: bytes, parent: bytes, card: ModelCard, val: np.ndarray) -> Exported:
    """``check.npz``: face export's inputs with the int8 graph's own outputs; refused when a
    second session (one thread) does not reproduce them within the serving check's limit.
    Its ``max_abs_diff`` (MLflow's ``onnx_parity_max_abs_diff``) is the largest difference
    from the parent's probabilities on those inputs."""
    spec = card.input
    assert isinstance(spec, ImageInput)
    noise = np.random.default_rng(0).random((CHECK_NOISE, 1, spec.height, spec.width), np.float32)
    inputs = np.concatenate([val[:CHECK_FACES], noise])
    outputs = Classifier(card, OnnxRunner(int8)).predict_tensor(inputs)
    again = Classifier(card, OnnxRunner(int8, RunnerConfig(intra_op_threads=1)))
    if not float(np.abs(again.predict_tensor(inputs) - outputs).max()) <= CHECK_ATOL:
        raise QuantizationRefused("the int8 graph does not repeat its own outputs across sessions")
    from_parent = Classifier(card, OnnxRunner(parent)).predict_tensor(inputs)
    return Exported(int8, inputs, outputs, float(np.abs(outputs - from_parent).max()), len(inputs))


def build_card(
    parent: ModelCard, version: str, faces: int, evaluation: Evaluation, info: dict[str, Any]
) -> ModelCard:
    """The parent's card with what changed: the version, the source, the figures."""
    return derived_card(
        parent,
        version,
        f"int8 (ONNX Runtime static QDQ, per-channel) of {parent.ref}, calibrated on {faces} "
        "FER2013 train faces",
        info,
        [evaluation],
        [
            f"Weights int8 per channel, activations uint8 (ranges: min/max over {faces} "
            f"class-stratified FER2013 train faces, seed {info['seed']}); val was only scored.",
            f"Reference distribution is {parent.ref}'s; report.json has this graph's own "
            "predicted mix, its top-1 agreement with the parent and the speed of both.",
        ],
    )


def quantize(
    repo: ModelRepository,
    data: Path,
    run_dir: Path,
    tracking: Tracking,
    *,
    name: str = "face-emotion",
    version: str | None = None,
    calibration: int = DEFAULT_CALIBRATION,
    max_drop: float = DEFAULT_MAX_DROP,
    val_limit: int | None = None,
    seed: int = 0,
    speed_budget_s: float = 0.3,
    command: str = "emostream train face-quantize",
    progress: bool = True,
) -> ModelCard:
    """Quantize ``name/version`` (default: production) into the next version number.

    Raises :class:`QuantizationRefused` (after the MLflow run records why) when val accuracy
    drops more than ``max_drop`` points; ``val_limit`` scores a seeded subset (tests)."""
    parent_version = repo.resolve(name, version or PRODUCTION)
    parent = repo.card(name, parent_version)
    spec = parent.input
    if not isinstance(spec, ImageInput) or parent.task != "face-emotion":
        raise ValueError(f"{parent.ref} is not a face-emotion model: nothing to calibrate on")
    if tuple(parent.classes) != CLASSES:
        raise ValueError(f"{parent.ref} classes {parent.classes} are not FER2013's {CLASSES}")
    parent_onnx = repo.onnx_path(name, parent_version).read_bytes()
    splits = read(data, progress)
    faces = calibration_sample(splits["train"], calibration, seed)
    val = splits["val"].limit(val_limit, seed)
    val_inputs = prepare(list(val.images), spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    with tracking.run(name, run_dir.name) as mlrun:
        settings = {"calibration.faces": len(faces), "calibration.seed": seed, "max_drop": max_drop}
        mlrun.params({"parent": parent.ref, "data.path": str(data), **settings})
        mlrun.params({f"quantization.{k}": v for k, v in METHOD.items()})
        mlrun.tag("emostream.stage", "quantize")
        int8 = quantize_int8(
            parent_onnx, prepare(list(faces.images), spec), spec.name, progress=progress
        )
        scored = Scored(
            Report.from_probabilities(
                list(CLASSES),
                val.labels,
                served_scores(int8, parent, val_inputs, "int8 on val", progress),
            ),
            Report.from_probabilities(
                list(CLASSES),
                val.labels,
                served_scores(parent_onnx, parent, val_inputs, f"{parent.ref} on val", progress),
            ),
        )
        speed = _speed({parent.ref: parent_onnx, "int8": int8}, val_inputs[:1], speed_budget_s)
        p = scored.parent
        figures = write_val_report(
            scored.report,
            run_dir,
            f"{name} int8 of {parent.ref}, FER2013 val",
            command,
            parent={
                "ref": parent.ref,
                "accuracy": round(p.accuracy, 4),
                "macro_f1": round(p.macro_f1, 4),
                "ece": round(p.ece, 4),
                "scored_by": "onnxruntime (its model.onnx)",
            },
            accuracy_drop_points=round(scored.drop_points, 2),
            max_drop_points=max_drop,
            top1_agreement_with_parent=scored.agreement,
            calibration={
                "split": "train",
                "faces": len(faces),
                "seed": seed,
                "per_class": faces.counts(),
            },
            quantization={**METHOD, "onnxruntime": onnxruntime.__version__},
            ms_per_face=speed,
        )
        mlrun.metrics({f"val_{k}": figures[k] for k in ("accuracy", "macro_f1", "ece")})
        mlrun.metrics(
            {
                "parent_val_accuracy": p.accuracy,
                "accuracy_drop_points": round(scored.drop_points, 2),
                "top1_agreement_with_parent": scored.agreement,
            }
        )
        for f in ("report.json", "confusion.png", "reliability.png"):
            mlrun.artifact(run_dir / f, "report")
        if scored.drop_points > max_drop:
            raise QuantizationRefused(
                f"int8 {parent.ref} scores {scored.report.accuracy:.4f} on {scored.report.samples} "
                f"val faces against the parent's {p.accuracy:.4f}: {scored.drop_points:.2f} "
                f"points lower, more than --max-drop {max_drop:g}; nothing was registered"
            )
        exported = _check_file(int8, parent_onnx, parent, val_inputs)
        info = write_info(
            run_dir,
            run_id=mlrun.run_id,
            tracking_uri=tracking.uri,
            data=str(data),
            seed=seed,
            parent=parent.ref,
        )
    card = build_card(
        parent,
        repo.next_version(name),
        len(faces),
        Evaluation.model_validate(figures["evaluation"]),
        info,
    )
    folder = repo.version_dir(name, parent_version)
    extra = {
        f: (run_dir / f).read_bytes() for f in ("report.json", "confusion.png", "reliability.png")
    }
    if (folder / "config.yaml").is_file():  # the recipe of the weights, as the parent has it
        extra["config.yaml"] = (folder / "config.yaml").read_bytes()
    return publish(run_dir, repo, card, exported, extra, name)


def report_line(run_dir: Path) -> str:
    """The run's figures in one sentence, for the command's last line."""
    f = json.loads((run_dir / "report.json").read_text())
    line = (
        f"val accuracy {f['accuracy']:.4f} against {f['parent']['ref']}'s "
        f"{f['parent']['accuracy']:.4f} ({-f['accuracy_drop_points'] or 0.0:+.2f} points), top-1 "
        f"agreement {f['top1_agreement_with_parent']:.4f} on {f['samples']} faces"
    )
    speed = f.get("ms_per_face") or {}
    if "int8" in speed:
        parent, int8 = speed[f["parent"]["ref"]]["1"], speed["int8"]["1"]
        line += f"; batch 1 on one thread {int8:.3f} ms against {parent:.3f} ms per face"
    return line
