"""Offline analysis: images, videos and audio files in, one message per image, frame or
voice window out.

Used by ``emostream analyze``. Each image or frame is a job run through ``run_batch``, the
same path the real-time worker takes, so offline and live results are scored and counted
alike; audio (an audio file, or a video's audio after its frames) goes through
``analyze_voice`` (decoded as a stream; with ``channels``, one track per channel and
speaker role, and with ``summary`` the call's summary per file). A file that cannot be read
is reported and skipped, whatever went wrong with it; the other files are still analysed,
and the exit code says something failed.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from emostream.analyze_voice import analyze_audio
from emostream.annotate import draw_faces
from emostream.models.face import FaceAnalyzer
from emostream.models.face_tracking.ids import IouTracker
from emostream.models.voice import VoiceService
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.messages import face_message
from emostream.pipeline.outcomes import Failed, Scored
from emostream.pipeline.results_config import ResultsConfig
from emostream.remux_audio import add_audio
from emostream.schema import FaceMessage, VoiceMessage
from emostream.stream.audio import Channel, channel_tracks, media_streams
from emostream.stream.call_summary import CallRecord, CallSummary
from emostream.stream.media import (
    MediaError,
    VideoFrame,
    iter_video,
    kind_of,
    open_video,
    read_image,
)

log = logging.getLogger(__name__)


@dataclass
class AnalyzeOptions:
    detect: bool = True
    fps: float | None = None
    annotate: Path | None = None
    smooth: float = 1.0  # EMA weight of the newest frame; 1.0 = raw scores
    progress: bool = True
    max_pixels: int = 40_000_000
    max_audio_s: float = 3600.0
    channels: list[str] | None = None  # a role per channel; None: one mixed track
    analyse_roles: tuple[str, ...] = ("customer", "unknown")  # calls.analyse_roles
    summary: bool = False  # the call's summary after each file's voice messages
    unsure_below: float = field(default_factory=lambda: ResultsConfig().unsure_below)
    tracks: list[Channel] = field(init=False)

    def __post_init__(self) -> None:
        self.tracks = channel_tracks(self.channels, self.analyse_roles)


def annotated_path(src: Path, target: Path, single: bool, kind: str) -> Path:
    """OUT itself for one input with a file suffix; otherwise OUT/<stem>.annotated.<ext>."""
    if single and target.suffix:
        return target
    target.mkdir(parents=True, exist_ok=True)
    ext = ".mp4" if kind == "video" else (src.suffix or ".png")
    return target / f"{src.stem}.annotated{ext}"


#: Frames of a video scored per ``run_batch`` call. The face model's call is shared by their
#: faces: one crop at batch 1 costs several times its share of a batch of 16 (BENCHMARKS.md,
#: "The model alone, by batch size"); the detector still sees them one by one in order,
#: as following a face needs the frame before.
CHUNK_FRAMES = 16

Frame = tuple[int, np.ndarray, float | None]  # seq, image, pts


def _analyze(
    analyzer: FaceAnalyzer,
    frames: Sequence[Frame],
    source: str | None,
    opts: AnalyzeOptions,
    tracker: IouTracker | None,
    session: str | None = None,
) -> list[FaceMessage]:
    """Images or frames through the inference path as one batch, one message each
    (docs/ARCHITECTURE.md).

    A video's frames share a session (``session``, else its path), so the analyzer follows
    faces between detector runs as it does for a live stream; a photo has none and is
    always detected.
    """
    t0 = time.monotonic()
    jobs = []
    for seq, image, pts in frames:
        h, w = image.shape[:2]
        sid = (session or source or "") if pts is not None else ""
        jobs.append(Job(sid, seq, pts, image, FrameInfo(w, h, detect=opts.detect), created=t0))
    out = []
    for outcome in run_batch(analyzer, jobs):
        if not isinstance(outcome, Scored):
            why = outcome.error if isinstance(outcome, Failed) else outcome.reason.value
            raise MediaError("analysis_failed", f"{source or 'the frame'}: {why}")
        latency = time.monotonic() - t0
        out.append(
            face_message(
                outcome,
                latency_s=latency,
                unsure_below=opts.unsure_below,
                tracker=tracker,
                source=source,
            )
        )
    return out


def _chunks(frames: Iterable[VideoFrame]) -> Iterator[list[Frame]]:
    """A video's frames numbered from 0, ``CHUNK_FRAMES`` at a time."""
    numbered: Iterator[Frame] = ((seq, f.image, f.pts) for seq, f in enumerate(frames))
    while chunk := list(itertools.islice(numbered, CHUNK_FRAMES)):
        yield chunk


def analyze_frames(
    analyzer: FaceAnalyzer,
    frames: Iterable[VideoFrame],
    source: str | None,
    session: str,
    opts: AnalyzeOptions,
) -> Iterator[FaceMessage]:
    """A video's frames (decoded by anyone: an upload in memory) as face messages, its
    faces followed between frames under ``session``."""
    tracker = IouTracker(alpha=opts.smooth)
    for chunk in _chunks(frames):
        yield from _analyze(analyzer, chunk, source, opts, tracker, session)


def analyze_image(
    analyzer: FaceAnalyzer, path: Path, opts: AnalyzeOptions, out: Path | None
) -> Iterator[FaceMessage]:
    image = read_image(path, opts.max_pixels)
    (msg,) = _analyze(analyzer, [(0, image, None)], str(path), opts, None)
    yield msg
    if out is not None and not cv2.imwrite(str(out), draw_faces(image, msg.faces)):
        raise MediaError("write_failed", f"could not write {out}")


def analyze_video(
    analyzer: FaceAnalyzer, path: Path, opts: AnalyzeOptions, out: Path | None
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
            for chunk in _chunks(iter_video(path, opts.fps)):
                for (_, image, _), msg in zip(
                    chunk, _analyze(analyzer, chunk, str(path), opts, tracker), strict=True
                ):
                    yield msg
                    if out is not None:
                        if writer is None:
                            h, w = image.shape[:2]
                            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                            writer = cv2.VideoWriter(str(out), fourcc, opts.fps or info.fps, (w, h))
                        writer.write(draw_faces(image, msg.faces))
                    bar.update(1)
    finally:
        if writer is not None:
            writer.release()
    if out is not None and writer is not None and "audio" in media_streams(path):
        add_audio(out, path)  # VideoWriter writes pictures only: the sound, copied back


Message = FaceMessage | VoiceMessage


def analyze_paths(
    analyzer: FaceAnalyzer | None,
    paths: list[Path],
    opts: AnalyzeOptions,
    emit: Callable[[Message], None],
    report: Callable[[Path, str], None],
    voice: VoiceService | str | None = None,
    summarize: Callable[[Path, CallSummary], None] | None = None,
) -> int:
    """Analyse every path; returns the number of files that failed.

    ``analyzer`` may be None when every path is audio; ``voice`` is the voice analyzer
    with its VAD, or why voice is unavailable (audio files then fail with that reason; a
    video's frames are still analysed, its audio is not). With ``opts.summary`` each file
    with audio gets its call summary (``summarize``) after its messages. Any failure of one
    file, expected or not (a bug, a library's odd exception), is that file's alone.
    """
    failed = 0
    for path in paths:
        try:
            _analyze_path(analyzer, path, len(paths) == 1, opts, emit, report, voice, summarize)
        except MediaError as exc:
            failed += 1
            report(path, f"{exc.code}: {exc.detail}")
        except Exception as exc:  # one file's surprise (a bug, a library) must not end the run
            log.debug("analysing %s failed", path, exc_info=True)
            failed += 1
            report(path, f"analysis_failed: {path}: {exc!r}")
    return failed


def _analyze_path(
    analyzer: FaceAnalyzer | None,
    path: Path,
    single: bool,
    opts: AnalyzeOptions,
    emit: Callable[[Message], None],
    report: Callable[[Path, str], None],
    voice: VoiceService | str | None,
    summarize: Callable[[Path, CallSummary], None] | None,
) -> None:
    if not path.is_file():
        raise MediaError("not_found", f"{path}: no such file")
    kind = kind_of(path)
    audio = kind == "audio" or (kind == "video" and "audio" in media_streams(path))
    if kind == "audio" and opts.annotate is not None:
        report(
            path,
            f"annotate_skipped: {path} is audio only: --annotate draws on images and "
            "videos, so nothing is written for it",
        )
    if audio and not isinstance(voice, VoiceService):
        why = voice or "voice is not loaded"
        if kind == "audio":
            raise MediaError("voice_unavailable", f"{path}: {why}")
        report(path, f"voice_unavailable: its audio is not analysed ({why})")
    if kind != "audio":
        assert analyzer is not None, "a face analyzer is needed for images and videos"
        out = annotated_path(path, opts.annotate, single, kind) if opts.annotate else None
        run = analyze_image if kind == "image" else analyze_video
        for msg in run(analyzer, path, opts, out):
            emit(msg)
    if not (audio and isinstance(voice, VoiceService)):
        return
    for track in opts.tracks:
        if not track.analysed:
            report(
                path,
                f"track {track.name} ({track.role}) is not analysed (calls.analyse_roles): "
                "only its seconds are counted",
            )
    # the summary keeps every speech window's scores: only when asked for
    record = CallRecord(str(path), "file", frozenset(opts.analyse_roles)) if opts.summary else None
    for vmsg in analyze_audio(
        voice, path, opts.max_audio_s, opts.unsure_below, opts.tracks, record
    ):
        emit(vmsg)
    if record is not None and summarize is not None:
        record.ended = time.time()
        summarize(path, record.summary())
