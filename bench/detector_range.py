"""Face detector candidates for issue 15: faces found and time per frame, one table.

    emostream bench detectors        (or: python -m emostream.bench.detector_range)

The figures are in docs/ARCHITECTURE.md ("Face detection").

For BlazeFace near, auto and far (``min_face_px`` 20) and OpenCV's Haar cascade (full
size, ``minSize`` 20 px): the faces found in the shared photos and in a synthetic crowd
(six_people_stairs.jpg at 1/4 scale tiled 4 x 4: 96 faces of ~24 px in 1200 x 632), and
the median milliseconds of one ``detect`` on a 640 x 480 frame of woman2.mp4 and on the
1280 px photo six_people_table.jpg. Each timing is bounded to about two seconds.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from emostream.bench.measure import VIDEO, median, video_frames
from emostream.models.detectors.base import FaceDetector
from emostream.models.detectors.plugins.blazeface import BlazeFaceConfig, BlazeFaceDetector, Range
from emostream.models.detectors.plugins.haar import HaarConfig, HaarDetector
from emostream.paths import data_root, model_root
from emostream.stream.media import read_image

COUNTED = ("six_people_table.jpg", "six_people_stairs.jpg", "two_people.jpg", "no-faces.jpg")
EXPECTED = (6, 6, 2, 0)
CROWD_FACES = 96
BUDGET_S = 2.0  # per timed case
MAX_RUNS = 30


NOTES = """
- Counts are faces returned, not checked one by one: more than expected (Haar's 7 on
  six_people_stairs.jpg) means false faces. The BlazeFace far boxes of the crowd have no
  pairwise IoU >= 0.3 and none lies inside another (tests/test_detector_range.py).
- far runs the full-range model on the whole frame plus overlapping tiles of 16 x
  `min_face_px` = 320 px (`tile_overlap` 0.33): 6 tiles on 640 x 480, 24 on 1280 x 886,
  all in one batched ONNX Runtime call; its cost grows with the frame's area.
- auto is both models on the whole frame, no tiles: near webcam faces plus mid-distance
  ones (6 of 6 on the stairs, 5 of 6 at the table), for about 4x near's cost.
- Haar at full size with `minSize` 20 (its default shrinks the frame to 320 px, which
  misses every face here under ~80 px).
"""


def candidates(root: Path) -> dict[str, Callable[[], FaceDetector]]:
    """Name -> a detector factory, the four the table compares."""

    def blaze(r: Range) -> Callable[[], FaceDetector]:
        return lambda: BlazeFaceDetector(BlazeFaceConfig(model_root=root, range=r))

    return {
        "blazeface near": blaze("near"),
        "blazeface auto": blaze("auto"),
        "blazeface far (min_face 20)": blaze("far"),
        "haar (full size, minSize 20)": lambda: HaarDetector(HaarConfig(max_side=0, min_size=20)),
    }


def crowd(media: Path) -> np.ndarray:
    """96 faces of ~24 px: six_people_stairs.jpg at 1/4 scale, tiled 4 x 4."""
    small = cv2.resize(
        read_image(media / "six_people_stairs.jpg"),
        None,
        fx=0.25,
        fy=0.25,
        interpolation=cv2.INTER_AREA,
    )
    return np.tile(small, (4, 4, 1))


def vga_frame(media: Path) -> np.ndarray:
    """The first frame of woman2.mp4 letterboxed into 640 x 480 (black borders)."""
    (frame,) = video_frames(media / VIDEO, 1)
    h, w = frame.shape[:2]
    scale = min(640 / w, 480 / h)
    small = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    dy, dx = 480 - small.shape[0], 640 - small.shape[1]
    return cv2.copyMakeBorder(
        small, dy // 2, dy - dy // 2, dx // 2, dx - dx // 2, cv2.BORDER_CONSTANT, value=0
    )


def median_ms(det: FaceDetector, image: np.ndarray) -> float:
    det.detect(image)  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MAX_RUNS and time.perf_counter() - start < BUDGET_S:
        t0 = time.perf_counter()
        det.detect(image)
        times.append((time.perf_counter() - t0) * 1000.0)
    return median(times)


def table(media: Path, root: Path) -> str:
    images = {n: read_image(media / n) for n in COUNTED}
    many = crowd(media)
    vga = vga_frame(media)
    photo = images["six_people_table.jpg"]
    head = [*(f"{n} ({e})" for n, e in zip(COUNTED, EXPECTED, strict=True)), "crowd (96)"]
    head += ["ms 640x480", f"ms {photo.shape[1]}x{photo.shape[0]}"]
    lines = ["| detector | " + " | ".join(head) + " |", "| --- " * (len(head) + 1) + "|"]
    for name, make in candidates(root).items():
        det = make()
        counts = [len(det.detect(images[n])) for n in COUNTED] + [len(det.detect(many))]
        cells = [str(c) for c in counts]
        cells += [f"{median_ms(det, vga):.1f}", f"{median_ms(det, photo):.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    data = data_root()
    if data is None or not (data / "media").is_dir():
        sys.exit("shared data not found: set EMOSTREAM_DATA (needs media/)")
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    sys.stdout.write(
        "# Face detector candidates (issue 15)\n\n"
        "Faces found (expected in brackets) and the median ms of one `detect` call, one "
        f"ONNX Runtime thread, on this machine ({cpu}; shared, so timings are rough). "
        "Made by `emostream bench detectors` (bench/detector_range.py).\n\n"
        + table(data / "media", model_root())
        + NOTES
    )


if __name__ == "__main__":
    main()
