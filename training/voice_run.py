"""The stages of a voice training run: fit, evaluate (with the eGeMAPS baseline), export.

fit (speaker split, checkpoint, history, MLflow run) -> evaluate (test speakers per window
and per clip, clean and through a G.711 telephone line; the baseline on the same speakers;
report.json and PNGs) -> export (ONNX with parity, a repository version with its card, an
MLflow model version). Each stage reads and writes one run folder (``run.json``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from emostream.models.card import VOICE_EMOTION_USE, Evaluation, ModelCard, Output, Source
from emostream.models.repository import ModelRepository
from emostream.training.evaluate import Report
from emostream.training.loop import EpochHook
from emostream.training.mlflow_store import Tracking
from emostream.training.runs import (
    epoch_logger,
    fitting,
    history_png,
    publish,
    record_fit,
    resumable,
    run_info,
)
from emostream.training.voice_config import VoiceTrainConfig
from emostream.training.voice_data import (
    CLASSES,
    SpeakerSplit,
    describe,
    keep_classes,
    scan_all,
    speaker_split,
    trains_on,
)
from emostream.training.voice_windows import FRAMES, INPUT, OUTPUT, SPEC, audio_input

#: each corpus's citation and terms, for the card of a model trained on it
CORPUS_LICENCES = {
    "ravdess": "RAVDESS (Livingstone & Russo 2018), CC BY-NC-SA 4.0",
    "nemo": "nEMO (Christop 2024, amu-cai/nEMO), CC BY-NC-SA 4.0",
    "tess": "TESS (Dupuis & Pichora-Fuller 2010), CC BY-NC-ND 4.0",
    "crema-d": "CREMA-D (Cao et al. 2014), Open Database License",
    "emo-db": "EMO-DB (Burkhardt et al. 2005), see its distribution terms",
}


CORPUS_NAMES = {
    "ravdess": "RAVDESS",
    "nemo": "nEMO",
    "tess": "TESS",
    "crema-d": "CREMA-D",
    "emo-db": "EMO-DB",
}
SPOKEN = {
    "ravdess": "North American English",
    "nemo": "Polish",
    "tess": "Canadian English",
    "crema-d": "American English",
    "emo-db": "German",
}


def licence(corpora: Sequence[str]) -> str:
    """The card's licence line: every corpus the weights learnt from, with its terms."""
    named = "; ".join(CORPUS_LICENCES[c] for c in sorted(set(corpora)))
    return (
        f"Trained on {named}: these weights inherit the terms of each (for the CC BY-NC-SA "
        "corpora: attribution, non-commercial, share alike)."
    )


#: the figure a summary leads with (see docs/TRAINING.md)
HEADLINE = ("clip", "clean")

log = logging.getLogger(__name__)


def data_paths(info: dict[str, Any]) -> list[Path]:
    """The corpus folders a run was trained on (``run.json``: one path or a list)."""
    data = info["data"]
    return [Path(d) for d in (data if isinstance(data, list) else [data])]


def split_of(data: Sequence[Path], cfg: VoiceTrainConfig, say: bool = False) -> SpeakerSplit:
    """The speaker split; with ``data.limit`` (``--limit``) the train speakers' clips are a
    seeded random draw of that many, while the val and test speakers keep all of theirs
    (``say``: log which)."""
    clips = keep_classes(scan_all(data, cfg.data.corpus))
    split = speaker_split(clips, cfg.data.test_speakers, cfg.data.val_speakers)
    split = SpeakerSplit([c for c in split.train if trains_on(cfg, c)], split.val, split.test)
    limit = cfg.data.limit
    if limit is None or limit >= len(split.train):
        if say:
            log.info("training on all %d clips of the train speakers", len(split.train))
        return split
    rng = np.random.default_rng(cfg.seed)
    train = [split.train[i] for i in sorted(rng.permutation(len(split.train))[:limit])]
    if say:
        log.info(
            "training on %d of %d clips of the train speakers (data.limit: a seeded random "
            "draw); val and test speakers unlimited (%d and %d clips)",
            limit,
            len(split.train),
            len(split.val),
            len(split.test),
        )
    return SpeakerSplit(train, split.val, split.test)


def fit(
    data: Sequence[Path],
    run_dir: Path,
    cfg: VoiceTrainConfig,
    tracking: Tracking,
    progress: bool = True,
    run_name: str | None = None,
    on_epoch: EpochHook | None = None,
    *,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train on the train speakers, early stopping on the val speakers; a stopped fit in
    ``run_dir`` (``last.pt``) goes on where it stopped, in its MLflow run, unless ``fresh``."""
    from emostream.training.voice_trainer import VoiceTrainer
    from emostream.training.voice_windows import prepare

    prior = resumable(run_dir, cfg, fresh)
    split = split_of(data, cfg, say=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    speakers = {p: sorted(split.speakers(p)) for p in ("train", "val", "test")}
    train = prepare(split.train, cfg.data.floor_db, progress, "train clips")
    val = prepare(split.val, cfg.data.floor_db, progress, "val clips") if split.val else None
    trainer = VoiceTrainer(cfg, run_dir, progress)
    with fitting(run_dir, cfg, tracking, run_name or run_dir.name, prior) as mlrun:
        if prior is None:
            (run_dir / "config.yaml").write_text(cfg.to_yaml())
            (run_dir / "split.json").write_text(json.dumps(speakers, indent=2) + "\n")
            mlrun.params(cfg.flat())
            mlrun.params(
                {
                    "data.path": ", ".join(map(str, data)),
                    "data.train_clips": len(train),
                    "data.train": describe(split.train),
                    "data.val": describe(split.val),
                }
            )
            mlrun.tag("emostream.stage", "fit")
            mlrun.artifact(run_dir / "config.yaml")
            mlrun.artifact(run_dir / "split.json")

        result = trainer.fit(
            train, val, on_epoch=epoch_logger(mlrun, on_epoch), meta={"run_id": mlrun.run_id}
        )
        return record_fit(
            run_dir,
            mlrun,
            tracking,
            result,
            list(data),
            cfg.seed,
            speakers=speakers,
            corpora=sorted({c.corpus for c in split.train}),
        )


def report_figures(report: Report) -> dict[str, Any]:
    """A report's figures as report.json has them (``train calibrate`` writes them too)."""
    return {
        "accuracy": round(report.accuracy, 4),
        "macro_f1": round(report.macro_f1, 4),
        "ece": None if report.probabilities is None else round(report.ece, 4),
        "samples": report.samples,
        "per_class_precision": report.per_class_precision(),
        "per_class_recall": report.per_class_recall(),
        "per_class_f1": report.per_class_f1(),
        "confusion": report.confusion.tolist(),
    }


def per_class_png(rows: dict[str, dict[str, float]], title: str) -> bytes:
    """Recall per class, one bar per condition (network clean / telephone, baseline)."""
    from emostream.training.evaluate import _png, _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(CLASSES))
    for k, (label, recall) in enumerate(rows.items()):
        ax.bar(x + k * width, [recall.get(c, 0.0) for c in CLASSES], width, label=label)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, CLASSES, rotation=30, ha="right")
    ax.set(ylabel="recall", ylim=(0, 1), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def evaluate(
    run_dir: Path, command: str, progress: bool = True, baseline: bool = True
) -> dict[str, Any]:
    """The served graph on the test speakers, clean and through a telephone line, per
    window and per clip; the eGeMAPS baseline on the same clips; report.json + PNGs."""
    import importlib.util

    from emostream.training.voice_augment import telephone
    from emostream.training.voice_trainer import load_served, predict
    from emostream.training.voice_windows import all_windows, clip_mean, prepare

    info = run_info(run_dir)
    served, cfg = load_served(run_dir / "checkpoint.pt")
    split = split_of(data_paths(info), cfg)
    test = prepare(split.test, cfg.data.floor_db, progress, "test clips")
    phone = [telephone(w, "mu") for w in test.waves]
    reports: dict[str, dict[str, Report]] = {}
    import torch

    cpu = torch.device("cpu")
    for condition, waves in (("clean", test.waves), ("telephone", phone)):
        windows = all_windows(test, waves)
        probs = predict(served, windows.inputs, cpu, softmax=False)
        per_clip = clip_mean(probs, windows.clip, len(test))
        reports[condition] = {
            "window": Report.from_probabilities(list(CLASSES), windows.labels, probs),
            "clip": Report.from_probabilities(list(CLASSES), test.labels, per_clip),
        }
    speakers = ", ".join(s.split(":", 1)[1] for s in sorted(split.speakers("test")))
    where = f"held-out speakers {speakers}"
    tested = ", ".join(CORPUS_NAMES[c] for c in sorted({c.corpus for c in split.test}))
    figures: dict[str, Any] = {
        "classes": list(CLASSES),
        "test_speakers": sorted(split.speakers("test")),
        "val_speakers": sorted(split.speakers("val")),
        "train_speakers": sorted(split.speakers("train")),
        "headline": f"{HEADLINE[0]} {HEADLINE[1]}",
        "network": {
            cond: {unit: report_figures(r) for unit, r in by.items()}
            for cond, by in reports.items()
        },
        "telephone": "300 Hz high-pass, 8 kHz, G.711 mu-law 8 bits, back to 16 kHz",
        "predicted_distribution": reports["clean"]["window"].predicted_distribution(),
        "evaluation": [
            reports[cond][unit]
            .to_evaluation(tested, f"{where}, {cond}, per {unit}", command)
            .model_dump(mode="json")
            for cond in ("clean", "telephone")
            for unit in ("clip", "window")
        ],
    }
    recalls = {
        "network, clean": reports["clean"]["clip"].per_class_recall(),
        "network, telephone": reports["telephone"]["clip"].per_class_recall(),
    }
    if baseline and importlib.util.find_spec("opensmile") is not None:
        figures["baseline"] = _baseline(split, cfg, test, phone, progress)
        recalls["eGeMAPS baseline, clean"] = figures["baseline"]["clean"]["per_class_recall"]
    title = f"{cfg.model_name} ({run_dir.name}), {tested} {where}"
    clean_clip = reports["clean"]["clip"]
    (run_dir / "confusion.png").write_bytes(clean_clip.confusion_png(f"{title}, per clip", "clips"))
    (run_dir / "confusion-telephone.png").write_bytes(
        reports["telephone"]["clip"].confusion_png(f"{title}, telephone, per clip", "clips")
    )
    (run_dir / "confusion-window.png").write_bytes(
        reports["clean"]["window"].confusion_png(f"{title}, per 1.5 s window", "windows")
    )
    (run_dir / "reliability.png").write_bytes(
        reports["clean"]["window"].reliability_png(f"{title}, per window", unit="windows")
    )
    (run_dir / "per-class.png").write_bytes(per_class_png(recalls, f"recall per class, {where}"))
    history = run_dir / "history.json"
    if history.is_file():
        rows = {f"seed {info.get('seed', '?')}": json.loads(history.read_text())}
        (run_dir / "history.png").write_bytes(history_png(rows, f"{cfg.model_name} training"))
    (run_dir / "report.json").write_text(json.dumps(figures, indent=2) + "\n")
    tracking = Tracking(info["tracking_uri"], None)
    with tracking.run(cfg.experiment, run_dir.name, info["run_id"]) as mlrun:
        for cond, by in reports.items():
            for unit, r in by.items():
                mlrun.metrics(
                    {
                        f"test_{cond}_{unit}_accuracy": r.accuracy,
                        f"test_{cond}_{unit}_f1": r.macro_f1,
                    }
                )
        if "baseline" in figures:
            mlrun.metrics(
                {
                    f"baseline_{c}_accuracy": figures["baseline"][c]["accuracy"]
                    for c in ("clean", "telephone")
                }
            )
        for name in (
            "report.json",
            "confusion.png",
            "confusion-telephone.png",
            "confusion-window.png",
            "reliability.png",
            "per-class.png",
            "history.png",
        ):
            if (run_dir / name).is_file():
                mlrun.artifact(run_dir / name, "report")
    return figures


def _baseline(
    split: SpeakerSplit,
    cfg: VoiceTrainConfig,
    test: Any,
    phone: list[np.ndarray],
    progress: bool,
) -> dict[str, Any]:
    """eGeMAPS + logistic regression, fitted on train + val speakers (whole clips)."""
    from emostream.training.voice_baseline import egemaps, fit_predict
    from emostream.training.voice_windows import prepare

    fitted = prepare([*split.train, *split.val], cfg.data.floor_db, progress, "baseline clips")
    probs = fit_predict(
        egemaps(fitted.waves, progress),
        fitted.labels,
        [egemaps(test.waves, progress), egemaps(phone, progress)],
        cfg.seed,
    )
    present = sorted(set(fitted.labels.tolist()))
    out: dict[str, Any] = {
        "method": "openSMILE eGeMAPSv02 functionals (88), standardised, logistic regression "
        "(C=0.1), fitted on the train and val speakers, per clip",
    }
    for cond, p in zip(("clean", "telephone"), probs, strict=True):
        full = np.zeros((len(p), len(CLASSES)), np.float32)
        full[:, present] = p
        out[cond] = report_figures(Report.from_probabilities(list(CLASSES), test.labels, full))
    return out


def build_card(
    cfg: VoiceTrainConfig, version: str, figures: dict[str, Any], info: dict[str, Any]
) -> ModelCard:
    import emostream

    clean = figures["network"]["clean"]["clip"]["accuracy"]
    phone = figures["network"]["telephone"]["clip"]["accuracy"]
    speakers = info.get("speakers", {})
    return ModelCard(
        name=cfg.model_name,
        version=version,
        task="voice-emotion",
        modality="voice",
        classes=list(CLASSES),
        input=audio_input(),
        output=Output(name=OUTPUT, kind="probabilities"),
        source=Source(
            kind="training",
            description=(
                f"VoiceNet (compact CNN on log-mel, width {cfg.net.width}, stages "
                f"{cfg.net.stages}) trained by emostream train voice on "
                f"{' + '.join(CORPUS_NAMES[c] for c in info.get('corpora', ['ravdess']))} "
                f"({info.get('epochs_run')} epochs, best {info.get('best_epoch')}; "
                f"{info.get('device')} {info.get('precision')}); held-out speakers: clip "
                f"accuracy {clean:.3f} clean, {phone:.3f} through a G.711 telephone line"
            ),
            package="emostream",
            version=emostream.__version__,
            authors="emostream",
            run_id=info.get("run_id"),
            data=", ".join(map(str, data_paths(info))),
        ),
        licence=licence(info.get("corpora", ["ravdess"])),
        intended_use=VOICE_EMOTION_USE,
        evaluation=[Evaluation.model_validate(e) for e in figures["evaluation"]],
        reference_distribution=figures["predicted_distribution"],
        sha256="",
        created=datetime.now(UTC),
        notes=[
            f"Input: {audio_input().window_seconds} s windows of 16 kHz mono every "
            f"{audio_input().hop_seconds} s, log-mel ({SPEC.n_mels} mels, {FRAMES} frames, "
            "per-window standardised) computed by emostream.models.logmel.log_mel.",
            "Speakers: train "
            + ", ".join(speakers.get("train", []))
            + "; val (early stopping) "
            + (", ".join(speakers.get("val", [])) or "none, the epoch of best train accuracy")
            + "; test "
            + ", ".join(speakers.get("test", []))
            + " (never seen in training).",
            "Reference distribution: predicted class mix on the test speakers' windows.",
            "Acted speech ("
            + ", ".join(SPOKEN[c] for c in info.get("corpora", ["ravdess"]))
            + "): expect lower figures on spontaneous speech, other languages and other "
            "recording conditions.",
        ],
    )


def export(
    run_dir: Path,
    repo: ModelRepository,
    promote: bool = False,
    version: str | None = None,
    replace: bool = False,
) -> ModelCard:
    """ONNX (parity-checked on real test windows) + card -> a repository version."""
    from emostream.training.onnx_export import parity, to_onnx
    from emostream.training.voice_trainer import load_served
    from emostream.training.voice_windows import all_windows, prepare

    info = run_info(run_dir)
    served, cfg = load_served(run_dir / "checkpoint.pt")
    figures = json.loads((run_dir / "report.json").read_text())
    split = split_of(data_paths(info), cfg)
    real = all_windows(prepare(split.test[:24], cfg.data.floor_db, False)).inputs[:256]
    noise = np.random.default_rng(0).normal(size=(8, 1, SPEC.n_mels, FRAMES)).astype(np.float32)
    inputs = np.concatenate([real, noise])
    keep = np.r_[0 : min(4, len(real)), len(real) : len(inputs) - 4]  # check.npz: 8 rows
    onnx = to_onnx(served, (1, 1, SPEC.n_mels, FRAMES), INPUT, OUTPUT)
    exported = parity(served, onnx, inputs, INPUT, OUTPUT, keep)
    version = version or repo.next_version(cfg.model_name)
    card = build_card(cfg, version, figures, info)
    extra = {
        name: (run_dir / name).read_bytes()
        for name in (
            "config.yaml",
            "split.json",
            "report.json",
            "confusion.png",
            "confusion-telephone.png",
            "per-class.png",
            "history.png",
        )
        if (run_dir / name).is_file()
    }
    return publish(run_dir, repo, card, exported, extra, cfg.experiment, promote, replace)
