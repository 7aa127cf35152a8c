"""`bench face`, our side: the face path timed on real crops and frames.

The model at several batch sizes (bare and with preprocessing), every face-emotion version
on one core, and ``FaceAnalyzer`` per frame (the production schedule, then detect and
classify apart, then the detector alone). ``face.py`` runs these, ``face_report.py`` writes
what they measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from emostream.bench.face_versions import VersionTimes
from emostream.bench.measure import (
    VIDEO,
    BatchTimes,
    FrameStats,
    clocked,
    cycle,
    detector_crops,
    every,
    fer_val_faces,
    median,
    ms,
    progress,
    repeat_ms,
    say,
    sizes,
)
from emostream.bench.subjects import Subject, model_alone

MODEL = "face-emotion"
WARMUP_FRAMES = 5


def _say(msg: str) -> None:
    say("bench face", msg)


def face_crops(
    subject: Subject, frames: Sequence[np.ndarray], data: Path, n: int = 64
) -> tuple[list[np.ndarray], str]:
    """``n`` real face crops: detector crops from the video (BGR, what the live path
    classifies), or FER2013 val images when the detector finds no face."""
    crops = [c for found in detector_crops(subject, every(frames, n)) for c in found]
    if crops:
        src = (
            f"{len(crops)} detector crops of {VIDEO} (BGR, "
            f"{sizes(crops)} px, margin {subject.crop_margin})"
        )
        return cycle(crops, n), src
    imgs = [img for _, img in fer_val_faces(data, n)]
    if not imgs:
        raise SystemExit(f"no face found in {VIDEO} and no images under {data / 'fer2013/val'}")
    return cycle(imgs, n), "FER2013 val images (gray 48x48)"


def bench_batches(
    subject: Subject, crops: Sequence[np.ndarray], batches: Sequence[int]
) -> list[BatchTimes]:
    """Median ms per call of the bare model and of predict() at each batch size."""
    out = []
    for b in progress(batches, "model batches"):
        chunk = cycle(crops, b)
        tensor = subject.prepare(chunk)  # prepared once: time only the model
        model = repeat_ms(partial(subject.model, tensor))
        full = repeat_ms(partial(subject.predict, chunk))
        out.append(BatchTimes(b, median(model), median(full), len(model), len(full)))
    return out


def bench_versions(
    versions: Sequence[str], crops: Sequence[np.ndarray], batches: Sequence[int]
) -> list[VersionTimes]:
    """Each version's classifier alone on one core (ONNX Runtime and OpenCV one thread)."""
    old = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        out = []
        for v in versions:
            subject = model_alone(MODEL, 1, v)
            _say(f"{subject.model_ref} on one core, batch sizes {', '.join(map(str, batches))}")
            times = bench_batches(subject, crops, batches)
            out.append(VersionTimes(subject.classifier.card, times, subject.intra_op_threads))
        return out
    finally:
        cv2.setNumThreads(old)


def model_input(subject: Subject) -> str:
    """What ``predict()`` does to a crop before the model, from the card's input spec."""
    spec = subject.classifier.spec
    return f"{spec.color}, resize to {spec.width}x{spec.height}, scale"


def per_frame(subject: Subject, frames: Sequence[np.ndarray], name: str) -> FrameStats:
    """One ``analyze`` per frame, the frames numbered as one stream."""
    for frame in frames[:WARMUP_FRAMES]:
        subject.analyze(frame)
    subject.analyzer.tracks.forget("bench")  # the timed frames are a stream of their own
    ours = FrameStats(name, [], [], [])
    for seq, frame in enumerate(progress(frames, f"{name} per frame"), start=1):
        t, result = clocked(partial(subject.analyze, frame, seq))
        faces, label = subject.found(result)
        ours.ms.append(t)
        ours.faces.append(faces)
        ours.labels.append(label)
    return ours


def bench_frames(
    subject: Subject, frames: Sequence[np.ndarray], name: str = "emostream"
) -> tuple[FrameStats, FrameStats, FrameStats, FrameStats]:
    """One ``analyze`` per frame; then the same split into detect and classify; then the
    detector alone, with no model call in between (to expose contention between ONNX
    Runtime's and OpenCV's thread pools)."""
    ours = per_frame(subject, frames, name)
    detect = FrameStats("emostream detect", [], ours.faces)
    classify = FrameStats("emostream classify", [], ours.faces)
    for frame in progress(frames, "emostream detect/classify"):
        t, boxes = clocked(partial(subject.detect, frame))
        detect.ms.append(t)
        classify.ms.append(ms(partial(subject.classify, [frame], [boxes])))
    alone = FrameStats("emostream detect alone", [], ours.faces)
    alone.ms = [ms(partial(subject.detect, f)) for f in progress(frames, "emostream detect alone")]
    return ours, detect, classify, alone
