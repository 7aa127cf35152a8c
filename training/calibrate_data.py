"""The data a calibration reads: what its temperature is fitted on, and what it is checked on.

Never the reported evaluation set for the fit. Face: the parent's own early-stopping holdout
of FER2013 train, reproduced from the ``config.yaml`` in its version folder
(``holdout_split`` with the run's fraction and seed: exactly the faces it never trained on);
checked on val (PublicTest). Voice: the windows of named speakers (default RAVDESS 15, 16),
checked on the test speakers of the parent's ``config.yaml`` (17-20), clean and through a
G.711 line, per window and per clip. Or the fit comes from a file of logits (or
probabilities) and labels made elsewhere, such as out-of-fold scores of a cross-validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostream.models.card import ImageInput, ModelCard
from emostream.models.preprocess import prepare
from emostream.training.evaluate import Report
from emostream.training.temperature import as_views, from_probabilities

FACE_CHECK = "val (PublicTest)"
#: the voice trainer's validation speakers: RAVDESS 15 (male), 16 (female)
DEFAULT_FIT_SPEAKERS = ("15", "16")


@dataclass
class Labelled:
    """Graph inputs and their classes; for audio windows, the clip each came from."""

    inputs: np.ndarray
    labels: np.ndarray
    clips: np.ndarray | None = None
    clip_labels: np.ndarray | None = None

    def reports(self, classes: list[str], probs: np.ndarray) -> dict[str, Report]:
        """Per sample (key ``""``), or per clip (the mean of its windows) and per window."""
        if self.clips is None or self.clip_labels is None:
            return {"": Report.from_probabilities(classes, self.labels, probs)}
        from emostream.training.voice_windows import clip_mean

        per_clip = clip_mean(probs, self.clips, len(self.clip_labels))
        return {
            "clip": Report.from_probabilities(classes, self.clip_labels, per_clip),
            "window": Report.from_probabilities(classes, self.labels, probs),
        }


@dataclass
class HeldOut:
    dataset: str  # "FER2013", "RAVDESS"
    fit: Labelled | None  # None: the fit's logits come from a file
    fit_on: str  # the fit samples, in words
    checks: dict[str, Labelled]  # split, as the card's evaluation names it -> samples
    seen_in_training: list[str]  # fit speakers the parent was trained on (voice)


def read_logits(path: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, classes) logits and (N,) labels from an ``.npz`` holding ``labels`` and either
    ``logits`` or ``probs``; a ValueError says what is wrong with it."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz ({exc})") from None
    key = next((k for k in ("logits", "probs") if k in arrays), None)
    if key is None or "labels" not in arrays:
        raise ValueError(
            f"{path}: needs arrays 'labels' and 'logits' or 'probs', has {sorted(arrays)}"
        )
    scores, labels = arrays[key].astype(np.float64), arrays["labels"]
    if (
        scores.ndim != 2
        or scores.shape[1] != classes
        or len(scores) != len(labels)
        or not len(labels)
    ):
        raise ValueError(
            f"{path}: {key} {scores.shape} and labels {labels.shape} do not make N rows of "
            f"{classes} classes"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"{path}: labels must be class indices 0..{classes - 1}")
    if not np.isfinite(scores).all() or (key == "probs" and (scores < 0).any()):
        raise ValueError(f"{path}: {key} must be finite (and probabilities not negative)")
    views = from_probabilities(scores) if key == "probs" else as_views(scores)
    return views, labels.astype(np.int64)


def face(
    card: ModelCard, folder: Path, data: Path, fit: bool, limit: int | None, progress: bool
) -> HeldOut:
    """FER2013: the parent's holdout of train to fit on (when ``fit``), val to check."""
    from emostream.training.face_config import load_config
    from emostream.training.face_data import read
    from emostream.training.face_trainer import holdout_split

    spec = card.input
    assert isinstance(spec, ImageInput)
    splits = read(data, progress)
    val = splits["val"].limit(limit, 0)
    checks = {FACE_CHECK: Labelled(prepare(list(val.images), spec), val.labels)}
    if not fit:
        return HeldOut("FER2013", None, "", checks, [])
    if not (folder / "config.yaml").is_file():
        raise ValueError(
            f"{card.ref} has no config.yaml: the faces its training held out cannot be "
            "found again; pass --fit-logits"
        )
    cfg = load_config(folder / "config.yaml")
    train = splits["train"].limit(cfg.data.limit, cfg.seed)
    _, held = holdout_split(train, cfg.data.holdout, cfg.seed)
    if held is None:
        raise ValueError(
            f"{card.ref} was trained with data.holdout 0, on every train face: nothing is "
            "left to fit on; pass --fit-logits"
        )
    held = held.limit(limit, 0)
    fit_on = (
        f"FER2013 train, the {cfg.data.holdout:.0%} its training held out (stratified, "
        f"seed {cfg.seed}): {len(held)} faces"
    )
    return HeldOut(
        "FER2013", Labelled(prepare(list(held.images), spec), held.labels), fit_on, checks, []
    )


def voice(
    card: ModelCard,
    folder: Path,
    data: Path,
    fit_speakers: list[str] | None,
    limit: int | None,
    progress: bool,
) -> HeldOut:
    """Speech windows: of ``fit_speakers`` to fit on (None: the fit comes from a file), of the
    parent's test speakers to check, clean and through a telephone line."""
    from emostream.training.voice_augment import telephone
    from emostream.training.voice_config import VoiceTrainConfig, load_voice_config
    from emostream.training.voice_data import Clip, keep_classes, scan, speaker_split
    from emostream.training.voice_windows import all_windows, audio_input, prepare

    if card.input != audio_input():
        raise ValueError(f"{card.ref} reads {card.input}, not the voice trainer's windows")
    cfg_file = folder / "config.yaml"
    cfg = load_voice_config(cfg_file) if cfg_file.is_file() else VoiceTrainConfig()
    test = cfg.data.test_speakers
    both = sorted(set(test) & set(fit_speakers or []))
    if both:
        raise ValueError(f"speakers {both} are {card.ref}'s test speakers: fit on others")
    split = speaker_split(keep_classes(scan(data, cfg.data.corpus)), test, fit_speakers or [])
    rng = np.random.default_rng(0)

    def cut(clips: list[Clip]) -> list[Clip]:
        if limit is None or limit >= len(clips):
            return clips
        return [clips[i] for i in sorted(rng.permutation(len(clips))[:limit])]

    tested = prepare(cut(split.test), cfg.data.floor_db, progress, "test clips")
    where = "held-out speakers " + ", ".join(
        s.split(":", 1)[1] for s in sorted(split.speakers("test"))
    )
    checks = {}
    for cond, waves in (
        ("clean", tested.waves),
        ("telephone", [telephone(w, "mu") for w in tested.waves]),
    ):
        w = all_windows(tested, waves)
        checks[f"{where}, {cond}"] = Labelled(w.inputs, w.labels, w.clip, tested.labels)
    if not fit_speakers:
        return HeldOut("RAVDESS", None, "", checks, [])
    fitted = prepare(cut(split.val), cfg.data.floor_db, progress, "fit clips")
    w = all_windows(fitted)
    speakers = sorted(split.speakers("val"))
    trained = _trained_speakers(folder)
    fit_on = (
        f"RAVDESS speakers {', '.join(s.split(':', 1)[1] for s in speakers)}: "
        f"{len(w.labels)} windows of {len(fitted)} clips"
    )
    return HeldOut(
        "RAVDESS", Labelled(w.inputs, w.labels), fit_on, checks, sorted(set(speakers) & trained)
    )


def _trained_speakers(folder: Path) -> set[str]:
    """The speakers the version's training saw (train and early-stopping val), from its
    ``split.json``; none known without one."""
    f = folder / "split.json"
    if not f.is_file():
        return set()
    sides = json.loads(f.read_text())
    return set(sides.get("train", [])) | set(sides.get("val", []))
