"""Leave-speakers-out cross-validation of a voice recipe: k folds over every speaker.

One split of four actors is a noisy estimate (one actor is a quarter of it), so recipes are
chosen by k folds over all speakers of all corpora: each corpus's speakers are shuffled
(seeded) and dealt round-robin, so every fold holds out speakers of every corpus and no
speaker is ever on two sides. Each fold trains the recipe on the other folds' speakers
(no validation speakers: the last epochs are kept, as the shipped recipe does) and scores
its own, per corpus, per clip and per window, clean and through a G.711 line.

Clips are decoded once for all folds. A fold that finished (``fold-K/result.json``) is not
run again, and a fold stopped mid-run resumes from its checkpoint, so a CV run survives
the end of a session. The held-out windows' logits of every fold (``oof.npz``) are what a
temperature is fitted on (``calibrate.py``): data no model of the recipe trained on.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.training.mlflow_store import Tracking
from emostream.training.voice_config import VoiceTrainConfig
from emostream.training.voice_data import CLASSES, CORPUS_CLASSES, Clip, trains_on
from emostream.training.voice_windows import Prepared

CONDITIONS = ("clean", "telephone")
UNITS = ("clip", "window")


def assign_folds(clips: Sequence[Clip], k: int, seed: int) -> list[list[str]]:
    """``k`` lists of speakers: each corpus's speakers shuffled and dealt round-robin,
    the next corpus starting where the last one stopped, so fold sizes differ by at most
    one speaker and every fold has some of every corpus with at least ``k`` speakers."""
    speakers: dict[str, list[str]] = {}
    for c in clips:
        if c.speaker not in speakers.setdefault(c.corpus, []):
            speakers[c.corpus].append(c.speaker)
    total = sum(len(v) for v in speakers.values())
    if not 2 <= k <= total:
        raise ValueError(f"{k} folds need between 2 and {total} speakers")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    at = 0
    for corpus in sorted(speakers):
        for s in rng.permutation(sorted(speakers[corpus])):
            folds[at % k].append(str(s))
            at += 1
    return folds


@dataclass
class Scored:
    """One fold's held-out windows: logits, the clip and corpus of each window."""

    logits: np.ndarray  # (W, classes)
    clip: np.ndarray  # (W,) index into the fold's test clips
    labels: np.ndarray  # (C,) per clip
    corpus: list[str]  # (C,) per clip


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def figures(scored: dict[str, Scored]) -> dict[str, dict[str, Any]]:
    """Accuracy per corpus, condition and unit (and over the corpus's own classes only)."""
    from emostream.training.voice_windows import clip_mean

    out: dict[str, dict[str, Any]] = {}
    clean = scored["clean"]
    for corpus in sorted(set(clean.corpus)):
        own = np.array([c in CORPUS_CLASSES[corpus] for c in CLASSES])
        row: dict[str, Any] = {"clips": int(sum(c == corpus for c in clean.corpus))}
        for cond, s in scored.items():
            probs = np.exp(s.logits - s.logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            keep_clip = np.array([c == corpus for c in s.corpus])
            per_clip = clip_mean(probs, s.clip, len(s.labels))
            win = keep_clip[s.clip]
            row[f"{cond}_clip"] = _accuracy(per_clip[keep_clip], s.labels[keep_clip])
            row[f"{cond}_window"] = _accuracy(probs[win], s.labels[s.clip][win])
            if not own.all():
                row[f"{cond}_clip_own_classes"] = _accuracy(
                    per_clip[keep_clip] * own, s.labels[keep_clip]
                )
        out[corpus] = row
    return out


def score_fold(net_dir: Path, test: Prepared) -> dict[str, Scored]:
    """The fold's best checkpoint on its held-out clips, clean and through the line."""
    import torch

    from emostream.training.voice_augment import telephone
    from emostream.training.voice_trainer import load_served, predict
    from emostream.training.voice_windows import all_windows

    served, _ = load_served(net_dir / "checkpoint.pt")
    corpus = [c.corpus for c in test.clips]
    out = {}
    for cond in CONDITIONS:
        waves = test.waves if cond == "clean" else [telephone(w, "mu") for w in test.waves]
        windows = all_windows(test, waves)
        logits = predict(served.net, windows.inputs, torch.device("cpu"), softmax=False)
        out[cond] = Scored(logits, windows.clip, test.labels, corpus)
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, spread (sample standard deviation) and every fold, per corpus and figure."""
    out: dict[str, Any] = {}
    for corpus in sorted({c for r in results for c in r["figures"]}):
        rows = [r["figures"][corpus] for r in results if corpus in r["figures"]]
        keys = [k for k in rows[0] if k != "clips"]
        out[corpus] = {
            k: {
                "mean": round(statistics.fmean(r[k] for r in rows), 4),
                "std": round(statistics.stdev(r[k] for r in rows), 4) if len(rows) > 1 else 0.0,
                "folds": [round(r[k], 4) for r in rows],
            }
            for k in keys
        }
        out[corpus]["clips"] = sum(r["clips"] for r in rows)
    return out


def run_cv(
    data: Sequence[Path],
    out_dir: Path,
    cfg: VoiceTrainConfig,
    folds: int,
    tracking: Tracking,
    progress: bool = True,
    only: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Every fold (skipping finished ones); ``cv.json`` with the summary; ``oof.npz``."""
    from emostream.training.resume import forget
    from emostream.training.runs import epoch_logger
    from emostream.training.voice_data import describe, keep_classes, scan_all
    from emostream.training.voice_trainer import VoiceTrainer
    from emostream.training.voice_windows import prepare

    clips = keep_classes(scan_all(data, cfg.data.corpus))
    plan = assign_folds(clips, folds, cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(cfg.to_yaml())
    (out_dir / "folds.json").write_text(json.dumps(plan, indent=2) + "\n")
    todo = [k for k in range(folds) if only is None or k in only]
    pending = [k for k in todo if not (out_dir / f"fold-{k}" / "result.json").is_file()]
    every = prepare(clips, cfg.data.floor_db, progress, "clips") if pending else None
    fold_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_speakers": []})})
    for k in pending:
        assert every is not None
        held = set(plan[k])
        fold_dir = out_dir / f"fold-{k}"
        train = every.take(
            [i for i, c in enumerate(clips) if c.speaker not in held and trains_on(cfg, c)]
        )
        test = every.take([i for i, c in enumerate(clips) if c.speaker in held])
        with tracking.run(f"{cfg.experiment}-cv", f"{out_dir.name}-fold-{k}") as mlrun:
            mlrun.params(fold_cfg.flat())
            mlrun.params(
                {
                    "cv.folds": folds,
                    "cv.fold": k,
                    "cv.held_out": ", ".join(sorted(held)),
                    "data.train": describe(train.clips),
                    "data.test": describe(test.clips),
                }
            )
            mlrun.tag("emostream.cv", out_dir.name)
            trainer = VoiceTrainer(fold_cfg, fold_dir, progress)
            result = trainer.fit(train, None, on_epoch=epoch_logger(mlrun, None))
            scored = score_fold(fold_dir, test)
            got = figures(scored)
            for corpus, row in got.items():
                mlrun.metrics({f"{corpus}_{k2}": v for k2, v in row.items() if k2 != "clips"})
            np.savez_compressed(
                fold_dir / "scored.npz",
                **{
                    f"{cond}_{f}": getattr(s, f)
                    for cond, s in scored.items()
                    for f in ("logits", "clip")
                },
                labels=test.labels,
                corpus=np.array([c.corpus for c in test.clips]),
                speaker=np.array([c.speaker for c in test.clips]),
            )
            record = {
                "fold": k,
                "held_out": sorted(held),
                "train_clips": len(train),
                "test_clips": len(test),
                "epochs_run": len(result.history),
                "train_seconds": round(result.seconds, 1),
                "mlflow_run": mlrun.run_id,
                "figures": got,
            }
            (fold_dir / "result.json").write_text(json.dumps(record, indent=2) + "\n")
            forget(fold_dir)  # done: its last.pt (from which a stopped fold goes on) goes
    results = [
        json.loads((out_dir / f"fold-{k}" / "result.json").read_text())
        for k in range(folds)
        if (out_dir / f"fold-{k}" / "result.json").is_file()
    ]
    summary = {
        "folds": folds,
        "done": [r["fold"] for r in results],
        "seed": cfg.seed,
        "summary": summarise(results),
        "train_seconds": round(sum(r["train_seconds"] for r in results), 1),
    }
    (out_dir / "cv.json").write_text(json.dumps(summary, indent=2) + "\n")
    _oof(out_dir, [r["fold"] for r in results])
    return summary


def _oof(out_dir: Path, done: Sequence[int]) -> None:
    """The clean held-out windows of every finished fold, one file (for calibration)."""
    parts = [np.load(out_dir / f"fold-{k}" / "scored.npz") for k in done]
    if not parts:
        return
    logits = np.concatenate([p["clean_logits"] for p in parts])
    labels = np.concatenate([p["labels"][p["clean_clip"]] for p in parts])
    corpus = np.concatenate([p["corpus"][p["clean_clip"]] for p in parts])
    speaker = np.concatenate([p["speaker"][p["clean_clip"]] for p in parts])
    np.savez_compressed(
        out_dir / "oof.npz", logits=logits, labels=labels, corpus=corpus, speaker=speaker
    )
