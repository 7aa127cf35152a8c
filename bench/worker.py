"""`emostream bench worker`: the batching worker's throughput at batch 1…256.

The worker's whole point is that one ONNX Runtime call scores the faces of many sessions,
so this measures what batching buys on whichever provider the runner picks (CPU, or CUDA
with onnxruntime-gpu and ``EMOSTREAM_PROVIDERS`` / the auto choice):

1. the emotion classifier alone on real face crops (FER2013 val images when the shared
   data has them, else detector crops of the photos in ``media/``; never synthetic input),
   bare model call (``Classifier.predict_tensor``) and with preprocessing
   (``Classifier.predict``), faces/s and ms per batch;
2. the worker's own path (``FaceWorker.infer`` without a broker): detection per frame, then
   one ``FaceAnalyzer.classify`` call for every face of the batch, frames/s per batch.
   Detection is per frame and so linear in the batch: only batches up to 64 are run.

It rewrites its section of docs/BENCHMARKS.md and draws docs/bench-worker.png.
Run as ``python -m emostream.bench.worker --batches 1,2,4 --repeats 5``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from emostream.bench.report import machine_lines, md_table, num, write_section
from emostream.extras import require
from emostream.models.detectors.base import Box
from emostream.models.service import FaceService

SECTION = "Worker (emostream bench worker)"
CHART = "bench-worker.png"
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_REPEATS = 50
FRAME_BATCH_MAX = 64
WARMUP = 3
VIDEO = "woman2.mp4"
PHOTOS = ("justin.jpg", "obama.jpg", "two_people.jpg")


def _say(msg: str) -> None:
    """Progress on stderr, so stdout stays the markdown section."""
    tqdm.write(f"bench worker: {msg}", file=sys.stderr)


# -- results ---------------------------------------------------------------------------------


@dataclass
class ClassifierRow:
    """One batch size of the classifier alone (medians, ms per call)."""

    batch: int
    model_ms: float  # predict_tensor on a tensor prepared once
    predict_ms: float  # predict on the crops: preprocessing included

    @property
    def model_fps(self) -> float:
        return self.batch / self.model_ms * 1000.0

    @property
    def predict_fps(self) -> float:
        return self.batch / self.predict_ms * 1000.0


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
    classifier: list[ClassifierRow]
    frames: list[FrameRow]
    section: str
    out_md: Path
    chart: Path

    @property
    def provider(self) -> str:
        return self.providers[0]


# -- inputs ----------------------------------------------------------------------------------


def _media(data: Path | None) -> Path | None:
    media = data / "media" if data else None
    return media if media and media.is_dir() else None


def face_crops(service: FaceService, data: Path | None, n: int) -> tuple[list[np.ndarray], str]:
    """``n`` real face crops: FER2013 val faces (48x48 gray, spread over all classes), else
    detector crops of the photos in media/. Fails rather than time synthetic input."""
    val = data / "fer2013" / "val" if data else None
    if val and val.is_dir():
        every = sorted(val.glob("*/*.jpg"))
        files = every[:: max(1, len(every) // n)][:n]
        read = [(f.parent.name, cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)) for f in files]
        imgs = [g for _, g in read if g is not None]
        if imgs:
            classes = len({c for c, g in read if g is not None})
            return [imgs[i % len(imgs)] for i in range(n)], (
                f"{len(imgs)} FER2013 val faces (48x48 gray) spread over {classes} classes"
                + (", cycled" if len(imgs) < n else "")
            )
    media = _media(data)
    if media:
        from emostream.models.preprocess import crop

        margin = service.classifier.spec.crop_margin
        crops: list[np.ndarray] = []
        names: list[str] = []
        for photo in sorted(media.glob("*.jpg")):
            img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            if img is None:
                continue
            found = [crop(img, b, margin) for b in service.analyzer.detect(img)]
            crops += found
            names += [photo.name] if found else []
        if crops:
            return [crops[i % len(crops)] for i in range(n)], (
                f"{len(crops)} detector crops (BGR, margin {margin}) of {', '.join(names)}, cycled"
            )
    raise SystemExit(
        "bench worker needs real faces: the shared data's fer2013/val/ or photos with faces "
        f"in its media/ (looked in {data or 'no data folder'}); set EMOSTREAM_DATA"
    )


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale the way ingest does, so detection sees what the worker would see."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image
    size = (round(w * scale), round(h * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def full_frames(data: Path | None, n: int, max_side: int = 640) -> tuple[list[np.ndarray], str]:
    """``n`` distinct frames spread over woman2.mp4 (decoded before timing), else the photos
    in media/ cycled: the full frames a session hands the worker."""
    media = _media(data)
    if media is None:
        raise SystemExit(
            f"bench worker needs full frames from media/ (data: {data}); set EMOSTREAM_DATA"
        )
    video = media / VIDEO
    frames: list[np.ndarray] = []
    if video.is_file():
        cap = cv2.VideoCapture(str(video))
        all_frames: list[np.ndarray] = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            all_frames.append(frame)
        cap.release()
        if all_frames:
            step = max(1, len(all_frames) // n)
            frames = [_fit(f, max_side) for f in all_frames[::step][:n]]
            h, w = frames[0].shape[:2]
            src = f"{len(frames)} frames spread over {VIDEO} ({w}x{h})"
            return [frames[i % len(frames)] for i in range(n)], src
    photos = [cv2.imread(str(media / p), cv2.IMREAD_COLOR) for p in PHOTOS]
    frames = [_fit(p, max_side) for p in photos if p is not None]
    if not frames:
        raise SystemExit(f"bench worker found neither {VIDEO} nor {', '.join(PHOTOS)} in {media}")
    return [frames[i % len(frames)] for i in range(n)], f"the photos {', '.join(PHOTOS)}, cycled"


# -- timing ----------------------------------------------------------------------------------


def _ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def bench_classifier(
    service: FaceService,
    crops: Sequence[np.ndarray],
    batches: Sequence[int],
    repeats: int,
    warmup: int = WARMUP,
) -> list[ClassifierRow]:
    """Median ms per call of the bare model and of ``predict`` at each batch size.

    Repetitions go round the batch sizes (1, 2, …, 256, 1, 2, …) rather than one size after
    the other, so a burst of other load on the machine spreads over every size instead of
    bending the curve at one of them. Warm-up first at each size (on CUDA a new shape tunes).
    """
    from emostream.models.preprocess import prepare

    clf = service.classifier
    calls = []
    for b in batches:
        chunk = list(crops[:b])
        calls.append(
            (partial(clf.predict_tensor, prepare(chunk, clf.spec)), partial(clf.predict, chunk))
        )
    model: list[list[float]] = [[] for _ in batches]
    full: list[list[float]] = [[] for _ in batches]
    for m, f in calls:
        for _ in range(warmup):
            m()
            f()
    with tqdm(
        total=2 * repeats * len(batches), desc="classifier", unit="call", file=sys.stderr
    ) as bar:
        for _ in range(repeats):
            for k, (m, f) in enumerate(calls):
                model[k].append(_ms(m))
                full[k].append(_ms(f))
                bar.update(2)
    return [
        ClassifierRow(b, float(np.median(model[k])), float(np.median(full[k])))
        for k, b in enumerate(batches)
    ]


def bench_frames(
    service: FaceService,
    frames: Sequence[np.ndarray],
    batches: Sequence[int],
    repeats: int,
    warmup: int = WARMUP,
) -> list[FrameRow]:
    """``FaceWorker.infer`` without the broker: detect each frame, classify all in one call
    (repetitions round the batch sizes, as in ``bench_classifier``)."""
    analyzer = service.analyzer
    chunks = [list(frames[:b]) for b in batches]
    times: list[list[tuple[float, float, int]]] = [[] for _ in batches]  # detect, classify, faces

    def once(chunk: list[np.ndarray]) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        boxes: list[list[Box]] = [analyzer.detect(f) for f in chunk]
        t1 = time.perf_counter()
        analyzer.classify(chunk, boxes)
        t2 = time.perf_counter()
        return (t1 - t0) * 1000.0, (t2 - t1) * 1000.0, sum(len(x) for x in boxes)

    for chunk in chunks:
        for _ in range(warmup):
            once(chunk)
    with tqdm(
        total=repeats * len(batches), desc="worker path", unit="batch", file=sys.stderr
    ) as bar:
        for _ in range(repeats):
            for k, chunk in enumerate(chunks):
                times[k].append(once(chunk))
                bar.update(1)
    rows = []
    for b, t in zip(batches, times, strict=True):
        det = np.array([x[0] for x in t])
        cls = np.array([x[1] for x in t])
        rows.append(
            FrameRow(
                b,
                t[-1][2],
                float(np.median(det + cls)),
                float(np.median(det)),
                float(np.median(cls)),
            )
        )
    return rows


# -- report ----------------------------------------------------------------------------------


def gpu_lines(providers: Sequence[str]) -> list[str]:
    """The GPU's name when a GPU provider ran the model (machine_lines only knows the CPU)."""
    if not any(p.startswith(("CUDA", "Tensorrt")) for p in providers):
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ["- GPU: unknown (no nvidia-smi)"]
    q = "--query-gpu=name,memory.total,driver_version"
    res = subprocess.run(
        [smi, q, "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    names = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    return [f"- GPU: {n} (name, memory, driver)" for n in names] or ["- GPU: unknown"]


def draw_chart(
    path: Path, clf: Sequence[ClassifierRow], frames: Sequence[FrameRow], title: str
) -> None:
    """faces/s against batch size on a log2 axis: what batching buys each path."""
    require("matplotlib", extra="bench")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    xs = [r.batch for r in clf]
    ax.plot(xs, [r.model_fps for r in clf], "o-", label="classifier: model call alone")
    ax.plot(xs, [r.predict_fps for r in clf], "s-", label="classifier: predict() (+ preprocessing)")
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
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def render(
    *,
    heading: str = SECTION,
    res_providers: list[str],
    threads: str,
    detector: str,
    card_ref: str,
    crops_src: str,
    frames_src: str,
    clf: list[ClassifierRow],
    frames: list[FrameRow],
    repeats: int,
    warmup: int,
    command: str,
    started: datetime,
    wall_s: float,
    load: tuple[float, float],
    chart: str | None,
) -> str:
    """The markdown section, its ``##`` heading included."""
    provider = res_providers[0]
    lines = [
        f"## {heading}",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC with `{command}` (the whole run took "
        f"{wall_s:.0f} s). Provider used: **{provider}** (session providers: "
        f"{', '.join(res_providers)}).",
        "",
        *machine_lines(),
        *gpu_lines(res_providers),
        f"- Model: `{card_ref}` on {provider}, ONNX Runtime intra-op threads: {threads}; "
        f"detector: {detector}.",
        f"- Every figure is the median of {repeats} timed calls after {warmup} warm-up calls "
        "at that batch size; the repetitions go round all batch sizes in turn, so that other "
        f"load on the machine (load average {load[0]:.2f} before, {load[1]:.2f} after) "
        "falls on every size alike.",
        "",
        "### The classifier alone, by batch size",
        "",
        f"Input: {crops_src}. `Classifier.predict_tensor` is timed on a tensor prepared once "
        "(on a GPU provider this includes the copies to and from the device); "
        "`Classifier.predict` adds preprocessing (gray, resize to the card's input size, "
        "scale) as the worker runs it.",
        "",
    ]
    base = clf[0].model_fps if clf else 1.0
    rows: list[list[object]] = [
        [
            r.batch,
            num(r.model_ms, 2),
            num(r.model_fps, 0),
            num(r.predict_ms, 2),
            num(r.predict_fps, 0),
            f"{r.model_fps / base:.1f}x",
        ]
        for r in clf
    ]
    lines += [
        md_table(
            [
                "batch",
                "model ms/batch",
                "model faces/s",
                "predict() ms/batch",
                "predict() faces/s",
                f"model faces/s vs batch {clf[0].batch}",
            ],
            rows,
        ),
        "",
    ]
    if frames:
        lines += [
            "### The worker path, by batch size",
            "",
            f"Input: {frames_src}. What `FaceWorker.infer` does with a batch, without the "
            "broker: `FaceAnalyzer.detect` on each frame, then one `FaceAnalyzer.classify` "
            "call (crop, preprocess, model) for every face of the batch.",
            "",
        ]
        frows: list[list[object]] = [
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
        lines += [
            md_table(
                [
                    "frames/batch",
                    "faces",
                    "ms/batch",
                    "detect ms",
                    "classify ms",
                    "frames/s",
                    "faces/s",
                ],
                frows,
            ),
            "",
        ]
    if chart:
        lines += [f"![faces/s by batch size]({chart})", ""]
    lines += ["### Reading", "", _reading(clf, frames, provider), ""]
    return "\n".join(lines)


def _reading(clf: list[ClassifierRow], frames: list[FrameRow], provider: str) -> str:
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


def _service(providers: list[str] | None, threads: int | None) -> FaceService:
    """The worker's own service from Settings (EMOSTREAM_*), providers/threads overridden."""
    from emostream.models.repository import ModelMissingError
    from emostream.settings import Settings

    s = Settings()
    if providers:
        s = s.model_copy(update={"providers": providers})
    if threads is not None:
        s = s.model_copy(update={"intra_op_threads": threads})
    try:
        return FaceService.from_settings(s)
    except ModelMissingError as exc:
        raise SystemExit(f"{exc}; run `emostream models pull` first") from None
    except ValueError as exc:  # a provider this onnxruntime build lacks
        raise SystemExit(f"bench worker: {exc}") from None


def _detector_providers(svc: FaceService) -> list[str]:
    """Where detection ran (BlazeFace keeps its 128 px model on CPU by default): read off
    this thread's detector, which the run has built; empty for detectors without ONNX."""
    det: Any = svc.analyzer.detector
    det = getattr(getattr(det, "_local", None), "det", det)  # the service's thread-local one
    return list(getattr(getattr(det, "runner", None), "providers", []))


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
    service: FaceService | None = None,
    data: Path | None = None,
    command: str | None = None,
    section: str = SECTION,
) -> WorkerBench:
    """Run both measurements, rewrite the section of ``out_md``, draw ``chart``.

    ``providers`` None: ``EMOSTREAM_PROVIDERS`` or the runner's auto choice (CUDA first).
    ``threads`` None: the worker's setting (``EMOSTREAM_INTRA_OP_THREADS``, 0 = ORT's own).
    ``service``/``data`` default to the worker's Settings and ``emostream.paths.data_root()``;
    tests pass their fixtures. ``chart`` defaults to bench-worker.png beside ``out_md``;
    ``section`` lets a GPU run keep its own heading beside the CPU one.
    """
    from emostream.paths import data_root

    batches = sorted(set(batches))
    if not batches or batches[0] < 1 or repeats < 1:
        raise ValueError("batches must be positive integers and repeats at least 1")
    t_start = time.perf_counter()
    started = datetime.now(UTC)
    load0 = os.getloadavg()[0]
    svc = service or _service(providers, threads)
    data = data if data is not None else data_root()
    used = list(svc.classifier.runner.providers)
    opts = svc.classifier.runner.session.get_session_options()
    threads_desc = str(opts.intra_op_num_threads or "ORT default")
    detector = f"{svc.analyzer.detector.name} (`{svc.detector_ref}`)"
    _say(f"provider {used[0]}, model {svc.card.ref}, detector {detector}")

    crops, crops_src = face_crops(svc, data, max(batches))
    frame_batches = [b for b in batches if b <= frame_batch_max]
    frames, frames_src = full_frames(data, max(frame_batches)) if frame_batches else ([], "")
    _say(f"classifier alone, batches {','.join(map(str, batches))}: {crops_src}")
    clf = bench_classifier(svc, crops, batches, repeats, warmup)
    frow: list[FrameRow] = []
    if frame_batches:
        _say(f"worker path, batches {','.join(map(str, frame_batches))}: {frames_src}")
        frow = bench_frames(svc, frames, frame_batches, repeats, warmup)

    if det_providers := _detector_providers(svc):
        detector += f" on its own session ({det_providers[0]})"
    out_md = Path(out_md)
    chart = chart or out_md.parent / CHART
    draw_chart(
        chart,
        clf,
        frow,
        f"emostream bench worker: {used[0]}, {svc.card.ref}, {started:%Y-%m-%d}",
    )
    rel = os.path.relpath(chart, out_md.parent)
    cmd = command or (
        "python -m emostream.bench.worker --batches "
        + ",".join(map(str, batches))
        + f" --repeats {repeats}"
        + (f" --providers {shlex.quote(','.join(providers))}" if providers else "")
    )
    text = render(
        heading=section,
        res_providers=used,
        threads=threads_desc,
        detector=detector,
        card_ref=svc.card.ref,
        crops_src=crops_src,
        frames_src=frames_src,
        clf=clf,
        frames=frow,
        repeats=repeats,
        warmup=warmup,
        command=cmd,
        started=started,
        wall_s=time.perf_counter() - t_start,
        load=(load0, os.getloadavg()[0]),
        chart=rel,
    )
    write_section(out_md, section, text)
    _say(f"wrote {out_md} and {chart}")
    return WorkerBench(
        used, detector, crops_src, frames_src, repeats, clf, frow, text, out_md, chart
    )


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emostream.bench.worker``: until the CLI has ``emostream bench worker``."""
    p = argparse.ArgumentParser(prog="python -m emostream.bench.worker", description=__doc__)
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
            ["python", "-m", "emostream.bench.worker", *(sys.argv[1:] if argv is None else argv)]
        ),
    )
    print(res.section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
