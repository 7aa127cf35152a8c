"""``emostream train calibrate``: temperature scaling of an emotion model, as a new version.

A network trained with cross-entropy says 0.9 where it is right 70 % of the time; one scalar
``T`` dividing its logits fixes most of that without touching its top class (Guo et al.
2017). The stage: the parent's logits on held-out data that is not the reported set
(:mod:`calibrate_data`), ``T`` fitted there by negative log-likelihood (:mod:`temperature`),
a ``Div`` by ``T`` put in front of every Softmax of the parent's graph
(:mod:`onnx_temperature`), the parent and the new graph both scored on the evaluation set
(expected calibration error before and after, reliability diagrams side by side), then the
next version number registered with a ``calibration`` block on its card, like
``face-quantize`` (:func:`runs.publish`); production does not move.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from emostream.models.card import Calibration, CalibrationCheck, Evaluation, ModelCard
from emostream.models.check import CHECK_ATOL
from emostream.models.repository import PRODUCTION, ModelRepository
from emostream.training import calibrate_data
from emostream.training.calibrate_data import DEFAULT_FIT_SPEAKERS, HeldOut, Labelled
from emostream.training.evaluate import Report, reliability_panels_png
from emostream.training.face_run import write_val_report
from emostream.training.mlflow_store import Tracking
from emostream.training.onnx_export import Exported, ParityError
from emostream.training.onnx_temperature import temperature_of, with_logits, with_temperature
from emostream.training.runs import derived_card, publish, write_info
from emostream.training.temperature import BOUNDS, Fit, fit_temperature, probabilities
from emostream.training.voice_run import report_figures

REPORT_FILES = ("report.json", "calibration.png", "confusion.png", "reliability.png")
#: what a version folder keeps of its parent: the recipe of the weights, the speakers
PARENT_FILES = ("config.yaml", "split.json")


@dataclass
class Pair:
    """One evaluation set as the parent and the calibrated graph score it."""

    split: str
    before: Report
    after: Report

    def check(self) -> CalibrationCheck:
        return CalibrationCheck(
            split=self.split,
            samples=self.after.samples,
            ece_before=round(self.before.ece, 4),
            ece_after=round(self.after.ece, 4),
        )


def _outputs(graph: bytes, inputs: np.ndarray, threads: int = 0) -> list[np.ndarray]:
    """Every output of ``graph`` on ``inputs`` (ONNX Runtime, CPU, 256 at a time)."""
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunks = [session.run(None, {name: inputs[i : i + 256]}) for i in range(0, len(inputs), 256)]
    return [np.concatenate([np.asarray(c[k]) for c in chunks]) for k in range(len(chunks[0]))]


def graph_logits(graph: bytes, samples: Labelled, ref: str) -> np.ndarray:
    """(N, views, classes): each Softmax's input on ``samples``; refused (ValueError) unless
    the graph's output is the mean of its Softmax outputs, the form a temperature is fitted
    for."""
    exposed, names = with_logits(graph)
    out = _outputs(exposed, samples.inputs)
    views = np.stack(out[-len(names) :], axis=1)
    if not np.abs(probabilities(views, 1.0) - out[0]).max() <= CHECK_ATOL:
        raise ValueError(
            f"{ref}'s output is not the mean of its {len(names)} Softmax outputs: a "
            "temperature fitted on their inputs would not be the one it computes with"
        )
    return views


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _check_file(graph: bytes, calibrated: bytes, folder: Path, fallback: np.ndarray) -> Exported:
    """``check.npz``: the parent's check inputs (else the first evaluation inputs) with the
    new graph's outputs, refused unless a one-thread session repeats them; ``max_abs_diff``
    is the largest change from the parent's probabilities on them."""
    f = folder / "check.npz"
    if f.is_file():
        with np.load(f) as old:
            inputs = np.asarray(old["inputs"], np.float32)
    else:
        inputs = fallback[:24]
    outputs = _outputs(calibrated, inputs)[0]
    if not float(np.abs(_outputs(calibrated, inputs, threads=1)[0] - outputs).max()) <= CHECK_ATOL:
        raise ParityError("the calibrated graph does not repeat its own outputs across sessions")
    diff = float(np.abs(outputs - _outputs(graph, inputs)[0]).max())
    return Exported(calibrated, inputs, outputs, diff, len(inputs))


def _held_out(
    parent: ModelCard,
    folder: Path,
    data: Path,
    fit_speakers: list[str] | None,
    from_file: bool,
    limit: int | None,
    progress: bool,
) -> HeldOut:
    if parent.task == "face-emotion":
        if fit_speakers:
            raise ValueError(
                "--fit-speakers is for voice models: a face model is fitted on the part of "
                "train its training held out"
            )
        return calibrate_data.face(parent, folder, data, not from_file, limit, progress)
    if from_file and fit_speakers:
        raise ValueError("fit on --fit-speakers or on --fit-logits, not both")
    speakers = None if from_file else list(fit_speakers or DEFAULT_FIT_SPEAKERS)
    return calibrate_data.voice(parent, folder, data, speakers, limit, progress)


def headline(pairs: list[Pair]) -> Pair:
    """The set a message's confidence is like: faces on val, voice per window (clean)."""
    return next((p for p in pairs if p.split.endswith("per window")), pairs[0])


def _report(
    parent: ModelCard,
    pairs: list[Pair],
    summary: dict[str, Any],
    run_dir: Path,
    command: str,
) -> tuple[list[Evaluation], dict[str, float]]:
    """report.json, confusion.png, reliability.png (the new graph) and calibration.png
    (before and after side by side: faces on val, voice per window, clean, the unit of a
    live message); the card's evaluation entries and reference distribution."""
    head = headline(pairs)
    unit = "faces" if parent.modality == "face" else "windows"
    title = f"{parent.ref} on {head.split}"
    panels = [
        (f"{title}, as trained", head.before),
        (f"{title}, T = {summary['temperature']:.3f}", head.after),
    ]
    (run_dir / "calibration.png").write_bytes(reliability_panels_png(panels, unit=unit))
    checks = [
        {"split": p.split, "before": report_figures(p.before), "after": report_figures(p.after)}
        for p in pairs
    ]
    if parent.task == "face-emotion":
        figures = write_val_report(
            head.after, run_dir, f"{title}, calibrated", command, calibration=summary, checks=checks
        )
        return [Evaluation.model_validate(figures["evaluation"])], figures["predicted_distribution"]
    by_clip = pairs[0]  # the figure a voice report leads with: clean, per clip
    (run_dir / "confusion.png").write_bytes(by_clip.after.confusion_png(by_clip.split, "clips"))
    (run_dir / "reliability.png").write_bytes(head.after.reliability_png(title, unit=unit))
    evaluation = [p.after.to_evaluation("RAVDESS", p.split, command) for p in pairs]
    reference = head.after.predicted_distribution()
    report = {
        "classes": list(parent.classes),
        "calibration": summary,
        "checks": checks,
        "predicted_distribution": reference,
        "evaluation": [e.model_dump(mode="json") for e in evaluation],
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return evaluation, reference


#: the start of the note saying whose predictions the reference distribution is: replaced
REFERENCE_NOTE = "Reference distribution"


def _notes(parent: ModelCard, fit: Fit, held: HeldOut, fit_on: str, split: str) -> list[str]:
    notes = [
        f"Probabilities calibrated: every Softmax reads its logits divided by "
        f"{fit.temperature:.4f}, fitted by negative log-likelihood on {fit_on}; the "
        "calibration checks are on other data.",
        f"{REFERENCE_NOTE}: this graph's own predicted class mix on {split}.",
    ]
    if held.seen_in_training:
        notes.append(
            f"The fit speakers {', '.join(held.seen_in_training)} were trained on by "
            f"{parent.ref}: its confidence there is higher than on unseen speakers, so this "
            "temperature is likely too low."
        )
    if fit.at_bound:
        notes.append(f"The temperature lies at the edge of the search range {BOUNDS}.")
    return notes


def calibrate(
    repo: ModelRepository,
    data: Path,
    run_dir: Path,
    tracking: Tracking,
    *,
    name: str,
    version: str | None = None,
    fit_speakers: list[str] | None = None,
    fit_logits: Path | None = None,
    limit: int | None = None,
    command: str = "emostream train calibrate",
    progress: bool = True,
) -> ModelCard:
    """Fit a temperature for ``name/version`` (default: production) and register the
    calibrated graph as the next version. ``limit``: at most this many samples (clips for
    voice) of each set, seeded (tests). A ValueError says what is wrong with the input."""
    parent_version = repo.resolve(name, version or PRODUCTION)
    parent = repo.card(name, parent_version)
    if (
        parent.task not in ("face-emotion", "voice-emotion")
        or parent.output.kind != "probabilities"
    ):
        raise ValueError(
            f"{parent.ref} is a {parent.task} model with {parent.output.kind}: "
            "only emotion models whose graph ends in Softmax are calibrated"
        )
    graph = repo.onnx_path(name, parent_version).read_bytes()
    already = temperature_of(graph)
    if already is not None:
        raise ValueError(
            f"{parent.ref} already divides its logits by a temperature ({already:.4g}): "
            f"calibrate {parent.source.parent or 'the version it was made from'} instead"
        )
    folder = repo.version_dir(name, parent_version)
    held = _held_out(parent, folder, data, fit_speakers, fit_logits is not None, limit, progress)
    if fit_logits is not None:
        views, labels = calibrate_data.read_logits(fit_logits, len(parent.classes))
        fit_on = f"{len(labels)} scored samples from {fit_logits.name} (--fit-logits)"
    else:
        assert held.fit is not None
        views, labels, fit_on = (
            graph_logits(graph, held.fit, parent.ref),
            held.fit.labels,
            held.fit_on,
        )
    fit = fit_temperature(views, labels)
    calibrated = with_temperature(graph, fit.temperature)
    classes = list(parent.classes)
    pairs = []
    for split, samples in held.checks.items():
        before = samples.reports(classes, _outputs(graph, samples.inputs)[0])
        after = samples.reports(classes, _outputs(calibrated, samples.inputs)[0])
        for unit in before:
            pairs.append(Pair(f"{split}, per {unit}" if unit else split, before[unit], after[unit]))
    block = Calibration(
        temperature=round(fit.temperature, 4),
        fitted_on=fit_on,
        fitted_samples=fit.samples,
        nll_before=round(fit.nll_before, 4),
        nll_after=round(fit.nll_after, 4),
        checks=[p.check() for p in pairs],
    )
    summary = {
        **block.model_dump(mode="json"),
        "parent": parent.ref,
        "bounds": list(BOUNDS),
        "at_bound": fit.at_bound,
        "views": int(views.shape[1]),
        "fit_speakers_seen_in_training": held.seen_in_training,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with tracking.run(name, run_dir.name) as mlrun:
        mlrun.params({"parent": parent.ref, "data.path": str(data), "fit.on": fit_on[:250]})
        mlrun.tag("emostream.stage", "calibrate")
        mlrun.metrics(
            {
                "temperature": fit.temperature,
                "fit_nll_before": fit.nll_before,
                "fit_nll_after": fit.nll_after,
            }
        )
        for p in pairs:
            mlrun.metrics(
                {
                    f"ece_before_{_slug(p.split)}": p.before.ece,
                    f"ece_after_{_slug(p.split)}": p.after.ece,
                }
            )
        evaluation, reference = _report(parent, pairs, summary, run_dir, command)
        for f in REPORT_FILES:
            mlrun.artifact(run_dir / f, "report")
        first = next(iter(held.checks.values())).inputs
        exported = _check_file(graph, calibrated, folder, first)
        info = write_info(
            run_dir,
            run_id=mlrun.run_id,
            tracking_uri=tracking.uri,
            data=str(data),
            parent=parent.ref,
            temperature=fit.temperature,
        )
    card = derived_card(
        parent,
        repo.next_version(name),
        f"temperature scaling (T = {fit.temperature:.3f}) of {parent.ref}",
        info,
        evaluation,
        _notes(parent, fit, held, fit_on, headline(pairs).split),
        [n for n in parent.notes if not n.startswith(REFERENCE_NOTE)],
        calibration=block,
        reference_distribution=reference,
    )
    extra = {f: (run_dir / f).read_bytes() for f in REPORT_FILES}
    extra |= {f: (folder / f).read_bytes() for f in PARENT_FILES if (folder / f).is_file()}
    return publish(run_dir, repo, card, exported, extra, name)


def report_line(card: ModelCard) -> str:
    """The calibration in one sentence, for the command's last line."""
    c = card.calibration
    assert c is not None
    checks = "; ".join(f"{k.split} {k.ece_before:.3f} -> {k.ece_after:.3f}" for k in c.checks)
    return f"T = {c.temperature:.4f} (fitted on {c.fitted_on}); calibration error {checks}"
