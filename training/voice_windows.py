"""Clips to 1.5 s windows to log-mel tensors: the voice model's unit of input.

Training crops random windows inside each clip's speech (a time shift every epoch);
evaluation slides windows every 0.5 s over the speech, as the live stream does, and a
clip's score is the mean of its windows' probabilities. Features are the numpy log-mel of
``models/logmel.py``, the very function serving calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emostream.models.card import AudioInput
from emostream.models.logmel import LogMelSpec, log_mel
from emostream.training.voice_data import CLASSES, Clip, allowed, load_waves, speech_span

INPUT, OUTPUT = "logmel", "probabilities"
SPEC = LogMelSpec()


def audio_input() -> AudioInput:
    """The card's input: what a serving process must feed the graph."""
    return AudioInput(name=INPUT, features=SPEC)  # window and hop: the card's defaults


WINDOW = audio_input().window_samples
HOP = audio_input().hop_samples
FRAMES = SPEC.frames(WINDOW)


@dataclass
class Prepared:
    """Decoded clips with their speech spans, class indices and the classes each clip's
    label may mean (``allowed``, (N, classes) bool)."""

    clips: list[Clip]
    waves: list[np.ndarray]
    spans: list[tuple[int, int]]
    labels: np.ndarray
    allowed: np.ndarray

    def take(self, idx: Sequence[int]) -> Prepared:
        """The clips at ``idx`` (decoded samples shared, not copied)."""
        return Prepared(
            [self.clips[i] for i in idx],
            [self.waves[i] for i in idx],
            [self.spans[i] for i in idx],
            self.labels[list(idx)],
            self.allowed[list(idx)],
        )

    @property
    def partial(self) -> bool:
        """Some clip's label may mean more than one class."""
        return bool((self.allowed.sum(axis=1) > 1).any())

    def __len__(self) -> int:
        return len(self.clips)


def prepare(
    clips: Sequence[Clip], floor_db: float, progress: bool = True, desc: str = "decoding"
) -> Prepared:
    waves = load_waves(clips, progress, desc)
    spans = [speech_span(w, floor_db=floor_db) for w in waves]
    labels = np.array([CLASSES.index(c.emotion) for c in clips], dtype=np.int64)
    return Prepared(list(clips), waves, spans, labels, allowed(clips).reshape(-1, len(CLASSES)))


def cut(wave: np.ndarray, start: int, length: int = WINDOW) -> np.ndarray:
    """``length`` samples from ``start`` (may lie outside the clip: zeros there)."""
    out = np.zeros(length, np.float32)
    lo, hi = max(0, start), min(len(wave), start + length)
    if hi > lo:
        out[lo - start : hi - start] = wave[lo:hi]
    return out


def random_window(
    wave: np.ndarray,
    span: tuple[int, int],
    shift: int,
    rng: np.random.Generator,
    length: int = WINDOW,
) -> np.ndarray:
    """``length`` samples whose centre falls in the speech (kept ``length/2`` from its ends
    when the speech is long enough), moved by up to ``shift`` samples either way."""
    a, b = span
    lo, hi = a + length // 2, b - length // 2
    if hi < lo:
        lo = hi = (a + b) // 2
    centre = int(rng.integers(lo - shift, hi + shift + 1))
    return cut(wave, centre - length // 2, length)


def eval_windows(wave: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """(k, WINDOW) windows every HOP over the speech (one centred window if it is short)."""
    a, b = span
    if b - a <= WINDOW:
        return cut(wave, (a + b) // 2 - WINDOW // 2)[None]
    starts = list(range(a, b - WINDOW + 1, HOP))
    if b - WINDOW - starts[-1] > HOP // 2:
        starts.append(b - WINDOW)
    return np.stack([cut(wave, s) for s in starts])


def features(windows: np.ndarray) -> np.ndarray:
    """(N, WINDOW) waveforms -> (N, 1, mels, frames) float32, the graph's input."""
    return log_mel(windows, SPEC)[:, None]


@dataclass
class Windows:
    """Every evaluation window of a set of clips, and which clip each came from."""

    inputs: np.ndarray  # (W, 1, mels, frames)
    clip: np.ndarray  # (W,) clip index
    labels: np.ndarray  # (W,) class index


def all_windows(data: Prepared, waves: Sequence[np.ndarray] | None = None) -> Windows:
    """Windows of ``data`` (or of ``waves``, the same clips degraded, same spans)."""
    chunks, owner = [], []
    for i, (w, span) in enumerate(zip(waves or data.waves, data.spans, strict=True)):
        win = eval_windows(w, span)
        chunks.append(features(win))
        owner.append(np.full(len(win), i))
    clip = np.concatenate(owner)
    return Windows(np.concatenate(chunks), clip, data.labels[clip])


def clip_mean(probs: np.ndarray, clip: np.ndarray, clips: int) -> np.ndarray:
    """(clips, classes): the mean of each clip's window probabilities."""
    sums = np.zeros((clips, probs.shape[1]), np.float64)
    np.add.at(sums, clip, probs)
    counts = np.bincount(clip, minlength=clips)[:, None]
    out: np.ndarray = (sums / np.maximum(counts, 1)).astype(np.float32)
    return out
