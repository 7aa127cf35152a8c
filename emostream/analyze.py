"""Offline analysis: images and videos in, one face message per image or frame out.

Used by ``emostream analyze``. A file that cannot be read is reported and skipped; the
other files are still analysed, and the exit code says something failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from emostream.annotate import draw_faces
from emostream.models.service import FaceService
from emostream.models.tracker import IouTracker
from emostream.schema import Face, FaceMessage
from emostream.stream.media import MediaError, iter_video, kind_of, open_video, read_image


@dataclass
class AnalyzeOptions:
    detect: bool = True
    fps: float | None = None
    annotate: Path | None = None
    smooth: float = 1.0  # EMA weight of the newest frame; 1.0 = raw scores
    progress: bool = True
    max_pixels: int = 40_000_000


def annotated_path(src: Path, target: Path, single: bool, kind: str) -> Path:
    """OUT itself for one input with a file suffix; otherwise OUT/<stem>.annotated.<ext>."""
    if single and target.suffix:
        return target
    target.mkdir(parents=True, exist_ok=True)
    ext = ".mp4" if kind == "video" else (src.suffix or ".png")
    return target / f"{src.stem}.annotated{ext}"


def _message(
    service: FaceService,
    source: str,
    seq: int,
    pts: float | None,
    image_shape: tuple[int, ...],
    faces: list[Face],
    t0: float,
) -> FaceMessage:
    return FaceMessage(
        source=source,
        seq=seq,
        pts=pts,
        model=service.card.ref,
        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        width=int(image_shape[1]),
        height=int(image_shape[0]),
        faces=faces,
    )


def analyze_image(
    service: FaceService, path: Path, opts: AnalyzeOptions, out: Path | None
) -> Iterator[FaceMessage]:
    t0 = time.perf_counter()
    image = read_image(path, opts.max_pixels)
    result = service.process(image, detect=opts.detect)
    faces = service.analyzer.to_faces(result)
    yield _message(service, str(path), 0, None, image.shape, faces, t0)
    if out is not None and not cv2.imwrite(str(out), draw_faces(image, faces)):
        raise MediaError("write_failed", f"could not write {out}")


def analyze_video(
    service: FaceService, path: Path, opts: AnalyzeOptions, out: Path | None
) -> Iterator[FaceMessage]:
    cap, info = open_video(path)
    cap.release()
    total = info.frames
    if opts.fps and info.fps > 0:
        total = int(total * min(1.0, opts.fps / info.fps)) + 1
    tracker = IouTracker(alpha=opts.smooth)
    writer: cv2.VideoWriter | None = None
    try:
        with tqdm(
            total=total or None,
            desc=path.name,
            unit="frame",
            file=sys.stderr,
            disable=not opts.progress,
        ) as bar:
            for seq, frame in enumerate(iter_video(path, opts.fps)):
                t0 = time.perf_counter()
                result = service.process(frame.image, detect=opts.detect)
                faces = service.analyzer.to_faces(result, tracker)
                yield _message(service, str(path), seq, frame.pts, frame.image.shape, faces, t0)
                if out is not None:
                    if writer is None:
                        h, w = frame.image.shape[:2]
                        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                        writer = cv2.VideoWriter(str(out), fourcc, opts.fps or info.fps, (w, h))
                    writer.write(draw_faces(frame.image, faces))
                bar.update(1)
    finally:
        if writer is not None:
            writer.release()


def analyze_paths(
    service: FaceService,
    paths: list[Path],
    opts: AnalyzeOptions,
    emit: Callable[[FaceMessage], None],
    report: Callable[[Path, str], None],
) -> int:
    """Analyse every path; returns the number of files that failed."""
    failed = 0
    for path in paths:
        try:
            if not path.is_file():
                raise MediaError("not_found", f"{path}: no such file")
            kind = kind_of(path)
            out = (
                annotated_path(path, opts.annotate, len(paths) == 1, kind)
                if opts.annotate
                else None
            )
            run = analyze_image if kind == "image" else analyze_video
            for msg in run(service, path, opts, out):
                emit(msg)
        except MediaError as exc:
            failed += 1
            report(path, f"{exc.code}: {exc.detail}")
    return failed
