"""`emostream bench worker`: the batching worker's throughput at batch 1…256.

The worker's whole point is that one ONNX Runtime call scores the faces of many sessions,
so this measures what batching buys on whichever provider the runner picks (CPU, or CUDA
with onnxruntime-gpu and ``EMOSTREAM_PROVIDERS`` / the auto choice):

1. the emotion classifier alone on real face crops (FER2013 val images when the shared
   data has them, else detector crops of the photos in ``media/``; never synthetic input),
   bare model call (``Classifier.predict_tensor``) and with preprocessing
   (``Classifier.predict``), faces/s and ms per batch;
2. the worker's own path (the two stages of ``FaceAnalyzer.run``, timed apart, no broker):
   detection per frame, then one ``FaceAnalyzer.classify`` call for every face of the
   batch, frames/s per batch.
   Detection is per frame and so linear in the batch: only batches up to 64 are run.

It rewrites its section of docs/BENCHMARKS.md and draws docs/bench-worker.png. Also runs
as ``python -m emostream.bench.batch_sizes --batches 1,2,4 --repeats 5`` (argparse, no typer):
what scripts/gpu_worker_bench.sh runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from emostream.bench.measure import (
    PHOTOS,
    VIDEO,
    BatchTimes,
    clocked,
    cycle,
    detector_crops,
    every,
    fer_val_faces,
    fit,
    interleaved,
    media_dir,
    median,
    ms,
    say,
    timed,
    video_frames,
)
from emostream.bench.report import BATCH_HEADER, Section, batch_rows, chart, num
from emostream.bench.subjects import Subject, from_analyzer, worker_analyzer

if TYPE_CHECKING:
    from emostream.models.face import FaceAnalyzer

SECTION = "Worker (emostream bench worker)"
CHART = "bench-worker.png"
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_REPEATS = 50
FRAME_BATCH_MAX = 64
WARMUP = 3


def _say(msg: str) -> None:
    say("bench worker", msg)


# -- results ---------------------------------------------------------------------------------


@dataclass
class FrameRow:
    """One batch size of the worker path (medians, ms per batch of frames)."""

    batch: int
    faces: int  # faces found in the batch (the classifier's batch size)
    total_ms: float
    detect_ms: float
    classify_ms: float

    @property
    def frames_per_s(self) -> float:
        return self.batch / self.total_ms * 1000.0

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.total_ms * 1000.0


@dataclass
class WorkerBench:
    """What one run measured, and where it wrote it."""

    providers: list[str]  # the runner's session providers, the one used first
    detector: str
    crops_src: str
    frames_src: str
    repeats: int
    classifier: list[BatchTimes]
    frames: list[FrameRow]
    section: str
    out_md: Path
    chart: Path

    @property
    def provider(self) -> str:
        return self.providers[0]


# -- inputs ----------------------------------------------------------------------------------


def face_crops(subject: Subject, data: Path | None, n: int) -> tuple[list[np.ndarray], str]:
    """``n`` real face crops: FER2013 val faces (48x48 gray, spread over all classes), else
    detector crops of the photos in media/. Fails rather than time synthetic input."""
    faces = fer_val_faces(data, n)
    if faces:
        imgs = [g for _, g in faces]
        return cycle(imgs, n), (
            f"{len(imgs)} FER2013 val faces (48x48 gray) spread over "
            f"{len({c for c, _ in faces})} classes" + (", cycled" if len(imgs) < n else "")
        )
    media = media_dir(data)
    if media:
        names, images = [], []
        for photo in sorted(media.glob("*.jpg")):
            if (img := cv2.imread(str(photo), cv2.IMREAD_COLOR)) is not None:
                names.append(photo.name)
                images.append(img)
        found = detector_crops(subject, images)
        crops = [c for cs in found for c in cs]
        names = [name for name, cs in zip(names, found, strict=True) if cs]
        if crops:
            return cycle(crops, n), (
                f"{len(crops)} detector crops (BGR, margin {subject.crop_margin}) of "
                f"{', '.join(names)}, cycled"
            )
    raise SystemExit(
        "bench worker needs real faces: the shared data's fer2013/val/ or photos with faces "
        f"in its media/ (looked in {data or 'no data folder'}); set EMOSTREAM_DATA"
    )


def full_frames(data: Path | None, n: int, max_side: int = 640) -> tuple[list[np.ndarray], str]:
    """``n`` distinct frames spread over woman2.mp4 (decoded before timing), else the photos
    in media/ cycled: the full frames a session hands the worker."""
    media = media_dir(data)
    if media is None:
        raise SystemExit(
            f"bench worker needs full frames from media/ (data: {data}); set EMOSTREAM_DATA"
        )
    video = media / VIDEO
    if video.is_file() and (all_frames := video_frames(video)):
        frames = [fit(f, max_side) for f in every(all_frames, n)[:n]]
        h, w = frames[0].shape[:2]
        return cycle(frames, n), f"{len(frames)} frames spread over {VIDEO} ({w}x{h})"
    photos = [cv2.imread(str(media / p), cv2.IMREAD_COLOR) for p in PHOTOS]
    frames = [fit(p, max_side) for p in photos if p is not None]
    if not frames:
        raise SystemExit(f"bench worker found neither {VIDEO} nor {', '.join(PHOTOS)} in {media}")
    return cycle(frames, n), f"the photos {', '.join(PHOTOS)}, cycled"


# -- timing ----------------------------------------------------------------------------------


def bench_classifier(
    subject: Subject,
    crops: Sequence[np.ndarray],
    batches: Sequence[int],
    repeats: int,
    warmup: int = WARMUP,
) -> list[BatchTimes]:
    """Median ms per call of the bare model and of ``predict`` at each batch size, the
    repetitions going round the batch sizes (``interleaved``)."""
    calls = []
    for b in batches:
        chunk = list(crops[:b])
        tensor = subject.prepare(chunk)  # prepared once: time only the model
        calls += [timed(partial(subject.model, tensor)), timed(partial(subject.predict, chunk))]
    times = interleaved(calls, repeats, warmup, "classifier")
    return [
        BatchTimes(b, median(times[2 * k]), median(times[2 * k + 1])) for k, b in enumerate(batches)
    ]


def bench_frames(
    subject: Subject,
    frames: Sequence[np.ndarray],
    batches: Sequence[int],
    repeats: int,
    warmup: int = WARMUP,
) -> list[FrameRow]:
    """``FaceAnalyzer.run``'s stages without the broker: detect each frame, classify all in one call
    (repetitions round the batch sizes, as in ``bench_classifier``)."""

    def once(chunk: list[np.ndarray]) -> tuple[float, float, int]:
        det, boxes = clocked(lambda: [subject.detect(f) for f in chunk])
        cls = ms(partial(subject.classify, chunk, boxes))
        return det, cls, sum(len(x) for x in boxes)

    calls = [partial(once, list(frames[:b])) for b in batches]
    times = interleaved(calls, repeats, warmup, "worker path", unit="batch")
    rows = []
    for b, t in zip(batches, times, strict=True):
        det, cls = [x[0] for x in t], [x[1] for x in t]
        total = [d + c for d, c in zip(det, cls, strict=True)]
        rows.append(FrameRow(b, t[-1][2], median(total), median(det), median(cls)))
    return rows


# -- report ----------------------------------------------------------------------------------


def draw_chart(
    path: Path, clf: Sequence[BatchTimes], frames: Sequence[FrameRow], title: str
) -> None:
    """faces/s against batch size on a log2 axis: what batching buys each path."""
    with chart(path, title, (8, 4.8)) as ax:
        xs = [r.batch for r in clf]
        ax.plot(xs, [r.model_fps for r in clf], "o-", label="classifier: model call alone")
        ax.plot(
            xs, [r.predict_fps for r in clf], "s-", label="classifier: predict() (+ preprocessing)"
        )
        if frames:
            ax.plot(
                [r.batch for r in frames],
                [r.faces_per_s for r in frames],
                "^-",
                label="worker path: detect per frame + one classify (faces/s)",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("batch size (faces for the classifier, frames for the worker path)")
        ax.set_ylabel("faces/s (median); higher is faster")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)


def render(res: WorkerBench, section: Section, subject: Subject, warmup: int) -> Section:
    """The section's body: where it ran, the two tables, the chart, the reading."""
    provider, clf, frames = res.provider, res.classifier, res.frames
    threads = subject.intra_op_threads or "ORT default"
    section.measured(
        then=f" Provider used: **{provider}** (session providers: {', '.join(res.providers)})."
    )
    section.machine(
        f"- Model: `{subject.model_ref}` on {provider}, ONNX Runtime intra-op threads: "
        f"{threads}; detector: {res.detector}.",
        f"- Every figure is the median of {res.repeats} timed calls after {warmup} warm-up "
        "calls at that batch size; the repetitions go round all batch sizes in turn, so that "
        f"other load on the machine (load average {section.load_before:.2f} before, "
        f"{section.load_now:.2f} after) falls on every size alike.",
        providers=res.providers,
    )
    section.sub("The classifier alone, by batch size").add(
        f"Input: {res.crops_src}. `Classifier.predict_tensor` is timed on a tensor prepared "
        "once (on a GPU provider this includes the copies to and from the device); "
        "`Classifier.predict` adds preprocessing (gray, resize to the card's input size, "
        "scale) as the worker runs it."
    )
    base = clf[0].model_fps if clf else 1.0
    rows = batch_rows(clf, lambda r: f"{r.model_fps / base:.1f}x")
    section.table([*BATCH_HEADER, f"model faces/s vs batch {clf[0].batch}"], rows)
    if frames:
        section.sub("The worker path, by batch size").add(
            f"Input: {res.frames_src}. What `FaceAnalyzer.run` does with a worker batch, "
            "without the broker: `FaceAnalyzer.detect` on each frame, then one "
            "`FaceAnalyzer.classify` call (crop, preprocess, model) for every face of the batch."
        )
        frows = [
            [
                r.batch,
                r.faces,
                num(r.total_ms, 2),
                num(r.detect_ms, 2),
                num(r.classify_ms, 2),
                num(r.frames_per_s, 0),
                num(r.faces_per_s, 0),
            ]
            for r in frames
        ]
        header = ["frames/batch", "faces", "ms/batch", "detect ms", "classify ms"]
        section.table([*header, "frames/s", "faces/s"], frows)
    section.figure("faces/s by batch size", res.chart)
    return section.sub("Reading").add(reading(clf, frames, provider))


def reading(clf: list[BatchTimes], frames: list[FrameRow], provider: str) -> str:
    """What the figures say, computed from them."""
    best = max(clf, key=lambda r: r.model_fps)
    one = clf[0]
    parts = [
        f"On {provider} the model alone goes from {one.model_fps:,.0f} faces/s at batch "
        f"{one.batch} to {best.model_fps:,.0f} at batch {best.batch} "
        f"({best.model_fps / one.model_fps:.1f}x); with preprocessing the best is "
        f"{max(r.predict_fps for r in clf):,.0f} faces/s."
    ]
    if frames:
        top = max(frames, key=lambda r: r.frames_per_s)
        share = top.detect_ms / top.total_ms
        parts.append(
            f"The worker path peaks at {top.frames_per_s:,.0f} frames/s "
            f"({top.faces_per_s:,.0f} faces/s) at {top.batch} frames per batch, "
            f"detection taking {share:.0%} of the time: "
            + (
                "per-frame detection, not the classifier, bounds the worker, so batching "
                "more sessions into one call adds little once the classifier is batched."
                if share > 0.5
                else "the classifier still dominates, so larger batches keep paying."
            )
        )
    return " ".join(parts)


# -- entry points ----------------------------------------------------------------------------


def run_worker_bench(
    batches: list[int],
    repeats: int,
    out_md: Path,
    providers: list[str] | None = None,
    *,
    frame_batch_max: int = FRAME_BATCH_MAX,
    warmup: int = WARMUP,
    threads: int | None = None,
    chart: Path | None = None,
    analyzer: FaceAnalyzer | None = None,
    data: Path | None = None,
    command: str | None = None,
    section: str = SECTION,
) -> WorkerBench:
    """Run both measurements, rewrite the section of ``out_md``, draw ``chart``.

    ``providers`` None: ``EMOSTREAM_PROVIDERS`` or the runner's auto choice (CUDA first).
    ``threads`` None: the worker's setting (``EMOSTREAM_INTRA_OP_THREADS``, 0 = ORT's own).
    ``analyzer``/``data`` default to the worker's Settings and ``emostream.paths.data_root()``;
    tests pass their fixtures. ``chart`` defaults to bench-worker.png beside ``out_md``;
    ``section`` lets a GPU run keep its own heading beside the CPU one.
    """
    from emostream.paths import data_root

    batches = sorted(set(batches))
    if not batches or batches[0] < 1 or repeats < 1:
        raise ValueError("batches must be positive integers and repeats at least 1")
    cmd = command or (
        "python -m emostream.bench.batch_sizes --batches "
        + ",".join(map(str, batches))
        + f" --repeats {repeats}"
        + (f" --providers {shlex.quote(','.join(providers))}" if providers else "")
    )
    report = Section(section, cmd, out_md)
    subject = from_analyzer(analyzer) if analyzer else worker_analyzer(providers, threads)
    data = data if data is not None else data_root()
    used = subject.providers
    detector = f"{subject.detector_name} (`{subject.detector_ref}`)"
    _say(f"provider {used[0]}, model {subject.model_ref}, detector {detector}")

    crops, crops_src = face_crops(subject, data, max(batches))
    frame_batches = [b for b in batches if b <= frame_batch_max]
    frames, frames_src = full_frames(data, max(frame_batches)) if frame_batches else ([], "")
    _say(f"classifier alone, batches {','.join(map(str, batches))}: {crops_src}")
    clf = bench_classifier(subject, crops, batches, repeats, warmup)
    frow: list[FrameRow] = []
    if frame_batches:
        _say(f"worker path, batches {','.join(map(str, frame_batches))}: {frames_src}")
        frow = bench_frames(subject, frames, frame_batches, repeats, warmup)

    if det_providers := subject.detector_providers():
        detector += f" on its own session ({det_providers[0]})"
    chart = chart or report.out.parent / CHART
    title = f"emostream bench worker: {used[0]}, {subject.model_ref}, {report.started:%Y-%m-%d}"
    draw_chart(chart, clf, frow, title)
    res = WorkerBench(
        used, detector, crops_src, frames_src, repeats, clf, frow, "", report.out, chart
    )
    res.section = render(res, report, subject, warmup).write()
    _say(f"wrote {report.out} and {chart}")
    return res


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emostream.bench.batch_sizes``: for machines without the CLI's typer."""
    p = argparse.ArgumentParser(prog="python -m emostream.bench.batch_sizes", description=__doc__)
    p.add_argument("--batches", type=_ints, default=list(DEFAULT_BATCHES))
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    p.add_argument("--frame-batch-max", type=int, default=FRAME_BATCH_MAX)
    p.add_argument("--warmup", type=int, default=WARMUP)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--providers",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=None,
        help="e.g. CUDAExecutionProvider,CPUExecutionProvider (default: EMOSTREAM_PROVIDERS "
        "or auto)",
    )
    p.add_argument("--out", type=Path, default=Path("docs/BENCHMARKS.md"))
    p.add_argument("--chart", type=Path, default=None, help="default: bench-worker.png by --out")
    p.add_argument("--section", default=SECTION, help="the ## heading this run rewrites")
    a = p.parse_args(argv)
    res = run_worker_bench(
        a.batches,
        a.repeats,
        a.out,
        a.providers,
        frame_batch_max=a.frame_batch_max,
        warmup=a.warmup,
        threads=a.threads,
        chart=a.chart,
        section=a.section,
        command=shlex.join(
            [
                "python",
                "-m",
                "emostream.bench.batch_sizes",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
    )
    print(res.section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
