"""How well each VAD tells RAVDESS speech from silence, and what it costs per audio second.

Reference labels (no hand labels exist for RAVDESS): each clip is a studio recording of one
sentence with silence before and after it. Frames of 10 ms whose level is within
``SPAN_DB`` of the clip's loudest frame are voiced; the clip's speech is the span from its
first to its last voiced frame (pauses between words inside it count as speech), the rest
is silence. ``GUARD_S`` on each side of each boundary is not scored (where a word fades out
is a matter of definition, not of detection). A VAD frame is labelled by its centre sample.

Conditions: the clean clips; the same clips with white noise at ``SNR_DB`` below the
speech's level (a noisy line); the clean clips with ``PAD_S`` of white noise at
``PAD_DBFS`` before and after (a change of noise floor around speech: RAVDESS' own floor
is about -60 dBFS), scored on the padding only; and synthetic silence (white noise at -70
and -50 dBFS and brown noise at -50 dBFS, 20 s each), every frame of which is silence.
Window level: the windower's speech flag on each clean clip against the same rule applied
to the reference labels (share of the window's reference speech >= ``min_speech``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emostream.models.vad.base import Vad
from emostream.stream.audio import read_audio
from emostream.stream.windows import Windower, file_windows

RATE = 16000
HOP = 160  # 10 ms reference frames
SPAN_DB = 35.0
GUARD_S = 0.1
SNR_DB = 10.0
SEED = 20240613
PAD_S = 1.0
PAD_DBFS = -70.0


def ravdess_clips(root: Path, n: int) -> list[Path]:
    """``n`` clips spread evenly over every actor and emotion (sorted, deterministic)."""
    files = sorted(root.glob("Actor_*/*.flac")) + sorted(root.glob("Actor_*/*.wav"))
    if not files:
        return []
    step = max(1, len(files) // n)
    return files[::step][:n]


def reference(samples: np.ndarray) -> np.ndarray:
    """Per-sample labels: 1 speech, 0 silence, -1 not scored (the guard bands)."""
    frames = len(samples) // HOP
    x = samples[: frames * HOP].reshape(frames, HOP).astype(np.float64)
    db = 10 * np.log10(np.mean(x**2, axis=1) + 1e-12)
    voiced = np.flatnonzero(db > db.max() - SPAN_DB)
    labels = np.zeros(len(samples), np.int8)
    if not len(voiced):
        return labels
    a, b = voiced[0] * HOP, (voiced[-1] + 1) * HOP
    labels[a:b] = 1
    g = int(GUARD_S * RATE)
    for edge in (a, b):
        labels[max(0, edge - g) : edge + g] = -1
    return labels


def noisy(samples: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clip with white noise ``SNR_DB`` below its speech's RMS level."""
    speech = samples[labels == 1]
    level = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) if speech.size else 0.1
    noise = rng.normal(0.0, level / 10 ** (SNR_DB / 20), len(samples))
    return np.clip(samples + noise, -1, 1).astype(np.float32)


def silences(rng: np.random.Generator, seconds: float = 20.0) -> dict[str, np.ndarray]:
    n = int(seconds * RATE)
    white = rng.normal(0.0, 1.0, n)
    brown = np.cumsum(rng.normal(0.0, 1.0, n))
    brown -= np.convolve(brown, np.ones(801) / 801, mode="same")  # no DC drift
    out = {}
    for name, x, dbfs in (
        ("white -70 dBFS", white, -70),
        ("white -50 dBFS", white, -50),
        ("brown -50 dBFS", brown, -50),
    ):
        x = x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)
        out[name] = x.astype(np.float32)
    return out


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        self.tp += int(np.sum(pred & truth))
        self.fp += int(np.sum(pred & ~truth))
        self.fn += int(np.sum(~pred & truth))
        self.tn += int(np.sum(~pred & ~truth))

    @property
    def precision(self) -> float:
        return self.tp / max(1, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self.tp / max(1, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / max(1e-12, p + r)

    @property
    def false_positive_rate(self) -> float:
        return self.fp / max(1, self.fp + self.tn)


@dataclass
class VadScore:
    name: str
    clean: Counts = field(default_factory=Counts)
    noisy: Counts = field(default_factory=Counts)
    silence: dict[str, Counts] = field(default_factory=dict)
    padding: Counts = field(default_factory=Counts)  # the noise around each clip
    windows: int = 0
    windows_agree: int = 0
    clips_s: float = 0.0  # seconds of the clips (each run clean and noisy)
    seconds: float = 0.0  # audio seconds run
    busy_s: float = 0.0  # VAD CPU time spent on them

    @property
    def ms_per_audio_s(self) -> float:
        return self.busy_s / max(1e-9, self.seconds) * 1000.0

    @property
    def window_agreement(self) -> float:
        return self.windows_agree / max(1, self.windows)


def _frame_labels(vad: Vad, samples: np.ndarray) -> tuple[np.ndarray, float]:
    """(frames,) booleans of one fresh stream over the whole buffer, and the CPU time it took.

    The calling thread's CPU time, not wall time: both VADs run in this thread (Silero
    with one intra-op thread), and on a shared machine wall time would count other work."""
    f = vad.frame_samples
    n = len(samples) // f
    t0 = time.thread_time()
    probs = vad.stream()(samples[: n * f].reshape(n, f))
    return probs >= vad.threshold, time.thread_time() - t0


def _score(vad: Vad, samples: np.ndarray, labels: np.ndarray, into: Counts, s: VadScore) -> None:
    pred, busy = _frame_labels(vad, samples)
    f = vad.frame_samples
    centre = labels[np.arange(len(pred)) * f + f // 2]
    keep = centre >= 0
    into.add(pred[keep], centre[keep] == 1)
    s.seconds += len(pred) * f / RATE
    s.busy_s += busy


def evaluate(vads: Sequence[Vad], clips: Sequence[Path], min_speech: float) -> list[VadScore]:
    rng = np.random.default_rng(SEED)
    loaded = []
    for path in clips:
        x = read_audio(path)
        labels = reference(x)
        loaded.append((x, labels, noisy(x, labels, rng)))
    quiet = silences(rng)
    surrounded = []  # (clip in noise padding, labels: the padding silence, the clip unscored)
    for x, _, _ in loaded:
        pad = (rng.normal(0, 1, int(PAD_S * RATE)) * 10 ** (PAD_DBFS / 20)).astype(np.float32)
        marks = np.zeros(len(x) + 2 * len(pad), np.int8)
        marks[len(pad) : len(pad) + len(x)] = -1
        surrounded.append((np.concatenate([pad, x, pad]), marks))
    out = []
    for vad in vads:
        s = VadScore(vad.name)
        for x, labels, x_noisy in loaded:
            s.clips_s += len(x) / RATE
            _score(vad, x, labels, s.clean, s)
            _score(vad, x_noisy, labels, s.noisy, s)
            w = Windower(vad, 24000, 8000, min_speech=min_speech)
            truth = (labels == 1).astype(np.float32)
            for win in file_windows(x, w):
                a, b = round(win.start * RATE), round(win.end * RATE)
                s.windows += 1
                s.windows_agree += int(win.speech == (truth[a:b].mean() >= min_speech))
        for around, marks in surrounded:
            _score(vad, around, marks, s.padding, s)
        for name, x in quiet.items():
            s.silence[name] = Counts()
            _score(vad, x, np.zeros(len(x), np.int8), s.silence[name], s)
        out.append(s)
    return out
