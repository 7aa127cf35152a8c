"""How the benchmarks measure: timing loops, percentiles, progress, and their real inputs.

One copy for every bench, so that "median of N calls after W warm-up calls" and "frames of
woman2.mp4" mean the same thing in each section of docs/BENCHMARKS.md. Inputs are always
real: frames of the shared media, faces found in them, or FER2013 val faces; a bench that
finds none stops rather than time synthetic input.

``fer_baseline.py`` loads this file in the fer venv, which has no emostream: keep its
imports at module level to the standard library, NumPy, OpenCV and tqdm.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    from emostream.bench.subjects import Subject

T = TypeVar("T")
VIDEO = "woman2.mp4"
PHOTOS = ("justin.jpg", "obama.jpg", "two_people.jpg")


# -- progress --------------------------------------------------------------------------------


def say(bench: str, msg: str) -> None:
    """A progress line on stderr, so that stdout stays the markdown the CLI prints."""
    tqdm.write(f"{bench}: {msg}", file=sys.stderr)


def progress(items: Iterable[T], desc: str) -> Iterator[T]:
    """A transient progress bar on stderr."""
    yield from tqdm(items, desc=desc, leave=False, file=sys.stderr)


# -- timing ----------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, NaN for no values (a run that measured nothing)."""
    return float(np.percentile(values, q)) if len(values) else math.nan


def median(values: Sequence[float]) -> float:
    return pct(values, 50)


def clocked(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall time of one ``fn()`` call in milliseconds, and what it returned."""
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def ms(fn: Callable[[], object]) -> float:
    """Wall time of one ``fn()`` call, in milliseconds."""
    return clocked(fn)[0]


def repeat_ms(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    min_reps: int = 10,
    min_seconds: float = 0.75,
    max_reps: int = 2000,
) -> list[float]:
    """Wall times (ms) of ``fn()``: warm up first, then at least min_reps and min_seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < min_reps or time.perf_counter() - start < min_seconds
    ):
        times.append(ms(fn))
    return times


def interleaved(
    calls: Sequence[Callable[[], T]], repeats: int, warmup: int, desc: str, unit: str = "call"
) -> list[list[T]]:
    """``repeats`` results of each call, going round all the calls in turn (1, 2, …, 1, 2, …)
    rather than one after the other, so a burst of other load on the machine spreads over
    every call instead of bending the curve at one of them. Each call warms up first (on
    CUDA a new input shape tunes)."""
    for call in calls:
        for _ in range(warmup):
            call()
    out: list[list[T]] = [[] for _ in calls]
    with tqdm(total=repeats * len(calls), desc=desc, unit=unit, file=sys.stderr) as bar:
        for _ in range(repeats):
            for k, call in enumerate(calls):
                out[k].append(call())
                bar.update(1)
    return out


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """``fn`` as a call that returns its own wall time in ms (for :func:`interleaved`)."""
    return lambda: ms(fn)


# -- inputs ----------------------------------------------------------------------------------


def cycle(items: Sequence[T], n: int) -> list[T]:
    """``n`` items, going round ``items`` again where it has fewer."""
    return [items[i % len(items)] for i in range(n)]


def every(items: Sequence[T], n: int) -> Sequence[T]:
    """About ``n`` items spread evenly over ``items`` (every k-th; all of them if fewer)."""
    return items[:: max(1, len(items) // n)]


def media_dir(data: Path | None) -> Path | None:
    """The shared data's media/ folder, if there is one."""
    media = data / "media" if data else None
    return media if media and media.is_dir() else None


def video_frames(video: Path, n: int | None = None) -> list[np.ndarray]:
    """The first ``n`` frames (all with None), BGR, decoded up front: decoding is never part
    of what a bench times."""
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    try:
        while n is None or len(frames) < n:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


def fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale the way ingest does, so detection sees what the worker would see."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image
    size = (round(w * scale), round(h * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def fer_val_faces(data: Path | None, n: int) -> list[tuple[str, np.ndarray]]:
    """Up to ``n`` FER2013 val faces (48x48 gray) spread over all classes, with their class;
    empty when the shared data has none."""
    val = data / "fer2013" / "val" if data else None
    if val is None or not val.is_dir():
        return []
    files = every(sorted(val.glob("*/*.jpg")), n)[:n]
    read = [(f.parent.name, cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)) for f in files]
    return [(c, g) for c, g in read if g is not None]


def detector_crops(subject: Subject, images: Iterable[np.ndarray]) -> list[list[np.ndarray]]:
    """The subject's detector's face crops (with the model's margin) of each image."""
    return [[subject.crop(img, box) for box in subject.detect(img)] for img in images]


def sizes(crops: Sequence[np.ndarray]) -> str:
    """``WxH…WxH``: the range of crop sizes, for an input's description."""
    dims = [f"{c.shape[1]}x{c.shape[0]}" for c in crops]
    return f"{min(dims)}…{max(dims)}"


@dataclass
class FrameStats:
    """Per-frame times (ms) of one pipeline over the same frames, and what it found."""

    name: str
    ms: list[float]
    faces: list[int]
    labels: list[str | None] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.ms)

    @property
    def mean(self) -> float:
        """What a stream of these frames costs: detector runs and followed frames alike."""
        return float(np.mean(self.ms))

    @property
    def p95(self) -> float:
        return pct(self.ms, 95)

    @property
    def faces_per_frame(self) -> float:
        return float(np.mean(self.faces)) if self.faces else 0.0

    @property
    def frames_with_face(self) -> float:
        return float(np.mean([f > 0 for f in self.faces])) if self.faces else 0.0


@dataclass
class BatchTimes:
    """The classifier alone at one batch size: medians, ms per call."""

    batch: int
    model_ms: float  # the bare model call on a tensor prepared once
    predict_ms: float  # preprocessing and the model call, on the crops
    model_repeats: int = 0  # timed calls behind each median, where they vary
    predict_repeats: int = 0

    @property
    def model_fps(self) -> float:
        return self.batch / self.model_ms * 1000.0

    @property
    def predict_fps(self) -> float:
        return self.batch / self.predict_ms * 1000.0
