"""Face detectors on the hand-labelled boxes: the table the defaults are chosen by.

    emostream bench detectors

Every candidate whose weights are in the model repository runs once on every image of
``bench/face_boxes`` (and the shared-data images when ``EMOSTREAM_DATA`` has them) at a
low score threshold; ``box_metrics`` reads AP, precision, recall by face size and false
positives per image at the candidate's operating threshold from those detections, and the
threshold a calibration would pick (at most one false positive per ten images). Then the
median ms of one ``detect`` on a 640 x 480 frame and on a 1920 x 1080 photo, on one core;
a whole run ends with the photo pass's calibration and the 40 MP photo (``photo_pass.py``).
The figures and the choice made from them are in docs/ARCHITECTURE.md ("Face detection").
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import TypeAdapter

from emostream.bench import box_metrics as bm
from emostream.bench.boxset import LabelledImage, load_set
from emostream.bench.measure import median, progress, repeat_ms, say
from emostream.models.detectors import BACKENDS, DetectorConfig, create_detector
from emostream.models.detectors.base import DetectorConfigBase, FaceDetector
from emostream.models.detectors.cascade import Cascade, PhotoConfig, second_pass
from emostream.paths import data_root, model_root

#: The offline goal of issue 23: at most one false positive per ten images.
OFFLINE_FALSE_PER_IMAGE = 0.1
#: Score threshold of the sweep: low enough that AP sees the whole curve.
SWEEP_THRESHOLD = 0.05
BUDGET_S = 2.0
MAX_RUNS = 30


@dataclass(frozen=True)
class Candidate:
    """One row of the table: a name, the config it runs at, and its operating threshold."""

    name: str
    config: dict[str, Any]
    operating: float | None  # None: the detector's own threshold is the only one (Haar)
    #: with the still-image second pass (models/detectors/cascade.py); run at its operating
    #: thresholds only, so its AP covers that part of the curve and nothing is calibrated
    photo: bool = False


#: The DNN backends, each at the working sizes worth comparing (the longer side a frame is
#: shrunk to before the model; 0: full size): small faces need the pixels, and cost them.
SIDES = {"retinaface": (640, 0), "mtcnn": (640, 0)}


def candidates() -> list[Candidate]:
    """The rows: BlazeFace and YuNet at each range, Haar, and RetinaFace and MTCNN at each
    working size of ``SIDES``."""
    rows = [
        Candidate("blazeface near", {"type": "blazeface", "range": "near"}, 0.5),
        Candidate("blazeface auto", {"type": "blazeface", "range": "auto"}, 0.5),
        Candidate("blazeface far", {"type": "blazeface", "range": "far"}, 0.5),
        Candidate("haar", {"type": "haar", "max_side": 0, "min_size": 20}, None),
    ]
    if "yunet" in BACKENDS:
        yunet = _threshold_of(BACKENDS["yunet"].config_class.model_validate({}))
        for r in ("near", "auto", "far"):
            rows.append(Candidate(f"yunet {r}", {"type": "yunet", "range": r}, yunet))
        rows.append(
            Candidate(
                "yunet far + retinaface (photos)", {"type": "yunet", "range": "far"}, yunet, True
            )
        )
    for name, sides in SIDES.items():
        if name not in BACKENDS:
            continue
        default = BACKENDS[name].config_class.model_validate({})
        for side in sides:
            label = f"{name} {side or 'full'}"
            config = {"type": name, "max_side": side}
            rows.append(Candidate(label, config, _threshold_of(default)))
    return rows


def _threshold_of(config: DetectorConfigBase) -> float | None:
    value = getattr(config, "score_threshold", None)
    return float(value) if value is not None else None


def build(candidate: Candidate, root: Path, threshold: float | None) -> FaceDetector:
    """The candidate's detector, its score threshold set to ``threshold`` (when it has one)."""
    fields = dict(candidate.config)
    if threshold is not None and candidate.operating is not None:
        fields["score_threshold"] = threshold
    config: DetectorConfigBase = TypeAdapter(DetectorConfig).validate_python(fields)
    if candidate.photo:
        second = second_pass(config, PhotoConfig())
        assert second is not None, "the photo pass needs the far range"
        return Cascade(create_detector(config, root), create_detector(second, root))
    return create_detector(config, root)


def score_images(det: FaceDetector, images: Sequence[LabelledImage]) -> list[bm.ImageScore]:
    """Each image's detections matched to its labelled faces."""
    out = []
    for im in progress(images, "images"):
        out.append(im.match(det.detect(im.image())))
    return out


def median_ms(det: FaceDetector, image: np.ndarray) -> float:
    """Median ms of one ``detect`` call, after one warm-up, over about ``BUDGET_S``."""
    times = repeat_ms(
        lambda: det.detect(image), warmup=1, min_reps=3, min_seconds=BUDGET_S, max_reps=MAX_RUNS
    )
    return median(times)


def timing_frames(images: Sequence[LabelledImage]) -> tuple[np.ndarray, np.ndarray]:
    """A 640 x 480 frame and a 1920 x 1080 photo made from the set's largest group photo."""
    group = max(images, key=lambda im: len(im.faces)).image()
    return cv2.resize(group, (640, 480), interpolation=cv2.INTER_AREA), cv2.resize(
        group, (1920, 1080), interpolation=cv2.INTER_LINEAR
    )


@dataclass(frozen=True)
class Row:
    name: str
    at: bm.SetScore  # at the operating threshold
    calibrated: bm.SetScore  # at the calibrated threshold
    ms_vga: float
    ms_hd: float


def measure(
    root: Path, images: Sequence[LabelledImage], only: Sequence[str] = (), gpu: bool = False
) -> list[Row]:
    """Every candidate's row (those named in ``only``, when given; with ``gpu``, every
    ONNX Runtime backend with its providers unset: CUDA first where there is one)."""
    cv2.setNumThreads(1)
    vga, hd = timing_frames(images)
    rows = []
    chosen = [c for c in candidates() if not only or c.name in only]
    if only and len(chosen) < len(set(only)):
        known = ", ".join(c.name for c in candidates())
        sys.exit(f"unknown candidate in {list(only)}; known: {known}")
    for c in chosen:
        backend = BACKENDS.get(str(c.config["type"]))
        if gpu and backend is not None and "providers" in backend.config_class.model_fields:
            c = replace(c, config={**c.config, "providers": None})
        say("detectors", c.name)
        sweep = build(c, root, c.operating if c.photo else SWEEP_THRESHOLD)
        scored = score_images(sweep, images)
        operating = c.operating if c.operating is not None else -math.inf
        calibrated = bm.calibrate(scored, OFFLINE_FALSE_PER_IMAGE)
        if c.operating is None or c.photo:
            calibrated = -math.inf
        timed = build(c, root, c.operating)
        rows.append(
            Row(
                c.name,
                bm.score_set(scored, operating),
                bm.score_set(scored, calibrated),
                median_ms(timed, vga),
                median_ms(timed, hd),
            )
        )
    return rows


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}"


def table(rows: Sequence[Row], images: Sequence[LabelledImage]) -> str:
    """The markdown table of ``rows``."""
    sizes = rows[0].at.faces_by_size if rows else (0, 0, 0)
    by_size = " | ".join(f"R {n} ({k})" for n, k in zip(bm.SIZE_NAMES, sizes, strict=True))
    head = (
        f"| detector | AP | P | R | R >={bm.GOAL_WIDTH} | {by_size} | FP/img | thr "
        "| calibrated thr: R, FP/img "
        "| ms 640x480 | ms 1920x1080 |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        thr = "-" if math.isinf(r.at.threshold) else f"{r.at.threshold:.2f}"
        cal = (
            "-"
            if math.isinf(r.calibrated.threshold)
            else f"{r.calibrated.threshold:.2f}: {_pct(r.calibrated.recall)} %, "
            f"{r.calibrated.false_per_image:.2f}"
        )
        cells = [
            f"{r.at.ap:.3f}",
            _pct(r.at.precision),
            _pct(r.at.recall),
            _pct(r.at.recall_goal),
            *(_pct(x) for x in r.at.recall_by_size),
            f"{r.at.false_per_image:.2f}",
            thr,
            cal,
            f"{r.ms_vga:.1f}",
            f"{r.ms_hd:.1f}",
        ]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], out: Path) -> None:
    """Precision/recall curves of every candidate, with its operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(rows), 2)))
    for k, r in enumerate(rows):
        _, recall, precision = r.at.curve
        style = "-" if k % 2 == 0 else "--"
        (line,) = ax.plot(
            recall, precision, style, color=colours[k], label=f"{r.name} (AP {r.at.ap:.2f})"
        )
        ax.plot([r.at.recall], [r.at.precision], "o", color=line.get_color())
    ax.set_xlabel("recall (faces found)")
    ax.set_ylabel("precision (boxes that are faces)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Face detectors on the hand-labelled boxes (dot: operating threshold)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(plot_to: Path | None = None, only: Sequence[str] = (), gpu: bool = False) -> None:
    images = load_set(data_root())
    if not images:
        sys.exit("the labelled set is empty: bench/face_boxes/boxes.json")
    faces = sum(len(im.faces) for im in images)
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    rows = measure(model_root(), images, only, gpu)
    if plot_to is not None:
        plot(rows, plot_to)
    photo = ""
    if not only:  # the whole run: the photo pass's calibration and the 40 MP photo too
        from emostream.bench import photo_pass

        photo = photo_pass.photo_line(photo_pass.calibrate_photo(model_root(), images))
        photo += photo_pass.large_line(photo_pass.large_photo(images))
    sys.stdout.write(
        f"# Face detectors on the labelled set ({len(images)} images, {faces} faces)\n\n"
        "AP at IoU 0.5; P, R, recall by face width (faces in brackets) and false "
        "positives per image at the operating threshold `thr`; the threshold a "
        f"calibration picks for at most {OFFLINE_FALSE_PER_IMAGE:g} false positives per "
        "image, with its recall; median ms of one `detect` on one core "
        f"({cpu}; {_device(gpu)}). Made by `emostream bench detectors` "
        "(bench/detector_table.py).\n\n" + table(rows, images) + photo
    )


def _device(gpu: bool) -> str:
    """Where the ONNX Runtime detectors ran: the providers this onnxruntime has."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if gpu:
        return "ONNX Runtime on CUDA" if cuda else "`--gpu`, but this onnxruntime has no CUDA: CPU"
    return "ONNX Runtime on the CPU"
