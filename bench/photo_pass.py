"""The still-image cascade, measured: its two thresholds calibrated on the labelled boxes,
and what a photo at the pixel limit costs ``emostream analyze``.

Both are part of ``emostream bench detectors``'s report (``detector_table.main``): the
thresholds are the defaults of ``EMOSTREAM_DETECTOR__SCORE_THRESHOLD`` and
``EMOSTREAM_PHOTO__SCORE_THRESHOLD`` (docs/ARCHITECTURE.md, "Face detection"), and the
40 MP photo is the bound the far range keeps (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import TypeAdapter

from emostream.bench import box_metrics as bm
from emostream.bench.boxset import LabelledImage
from emostream.bench.detector_table import (
    OFFLINE_FALSE_PER_IMAGE,
    SWEEP_THRESHOLD,
    Candidate,
    build,
)
from emostream.bench.measure import progress
from emostream.models.detectors import DetectorConfig, create_detector
from emostream.models.detectors.cascade import PhotoConfig, merged, second_pass

#: The grid the photo pass's two thresholds are calibrated on.
FIRST_GRID = np.round(np.arange(0.70, 0.96, 0.01), 2)
SECOND_GRID = np.round(np.arange(0.80, 1.00, 0.01), 2)


@dataclass(frozen=True)
class PhotoCalibration:
    first: float
    second: float
    score: bm.SetScore


def calibrate_photo(root: Path, images: Sequence[LabelledImage]) -> PhotoCalibration:
    """The two thresholds of the still-image cascade (YuNet far, then RetinaFace), read off
    the set: the pair with the most faces >= ``GOAL_WIDTH`` found at no more than
    ``OFFLINE_FALSE_PER_IMAGE`` false positives per image (fewer false positives, then
    higher thresholds, break ties). Each model runs once at ``SWEEP_THRESHOLD``; every pair
    is merged from those detections as ``Cascade`` merges them."""
    first = build(Candidate("yunet far", {"type": "yunet", "range": "far"}, 0.85), root, 0.05)
    second_config = second_pass(
        TypeAdapter(DetectorConfig).validate_python({"type": "yunet", "range": "far"}),
        PhotoConfig(score_threshold=SWEEP_THRESHOLD),
    )
    assert second_config is not None
    second = create_detector(second_config, root)
    runs = [
        (first.detect(im.image()), second.detect(im.image()))
        for im in progress(images, "photo pass")
    ]
    best: PhotoCalibration | None = None
    for a in FIRST_GRID:
        for b in SECOND_GRID:
            scored = [
                im.match(merged([d for d in d1 if d.score >= a], [d for d in d2 if d.score >= b]))
                for im, (d1, d2) in zip(images, runs, strict=True)
            ]
            s = bm.score_set(scored, -math.inf)
            if s.false_per_image > OFFLINE_FALSE_PER_IMAGE:
                continue
            key = (s.recall_goal, -s.false_per_image, a, b)
            if best is None or key > (
                best.score.recall_goal,
                -best.score.false_per_image,
                best.first,
                best.second,
            ):
                best = PhotoCalibration(float(a), float(b), s)
    assert best is not None, "no pair keeps the false positives within the budget"
    return best


#: The pixel limit of an upload (``limits.max_pixels``): the largest photo analyze takes.
LARGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class LargePhoto:
    width: int
    height: int
    seconds: float
    peak_mb: float
    faces: int


def large_photo(images: Sequence[LabelledImage]) -> LargePhoto:
    """``emostream analyze`` with its defaults on a 40 MP photo (the set's largest group
    photo tiled to that size, a temporary JPEG deleted after), in a process of its own:
    wall time, peak resident memory, faces found."""
    group = max(images, key=lambda im: len(im.faces)).image()
    h, w = group.shape[:2]
    side = math.sqrt(LARGE_PIXELS / (w * h))
    big = np.tile(group, (math.ceil(side), math.ceil(side), 1))
    big = big[: int(h * side), : int(w * side)]
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp:
        path = Path(tmp) / "large.jpg"
        cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "emostream.cli",
                "analyze",
                str(path),
                "--quiet",
                "--format",
                "jsonl",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    faces = len(json.loads(out.stdout.splitlines()[0])["faces"])
    # ru_maxrss of the children is the largest child's, in KiB; an earlier, larger child
    # (none here) would hide this one
    return LargePhoto(big.shape[1], big.shape[0], seconds, max(peak, before) / 1024, faces)


def large_line(p: LargePhoto) -> str:
    return (
        f"\nA {p.width}x{p.height} photo ({p.width * p.height / 1e6:.0f} MP, the pixel limit; "
        f"the largest group photo of the set tiled): `emostream analyze` with its defaults "
        f"took {p.seconds:.1f} s and at most {p.peak_mb:,.0f} MB of memory in a process of "
        f"its own, and found {p.faces} faces.\n"
    )


def photo_line(c: PhotoCalibration) -> str:
    """What ``calibrate_photo`` found, as the sentence the table ends with."""
    s = c.score
    return (
        f"\nThe still-image cascade's thresholds, calibrated on this set: YuNet far "
        f">= {c.first:.2f}, then RetinaFace >= {c.second:.2f}: {100 * s.recall_goal:.0f} % "
        f"of the faces >= {bm.GOAL_WIDTH} px ({100 * s.recall:.0f} % of all), "
        f"{s.false_per_image:.2f} false positives per image "
        "(the defaults: `EMOSTREAM_DETECTOR__SCORE_THRESHOLD`, "
        "`EMOSTREAM_PHOTO__SCORE_THRESHOLD`).\n"
    )
