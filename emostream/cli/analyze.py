"""``emostream analyze``: offline images, videos and audio files, one message per image,
frame or voice window."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from emostream.cli.common import (
    EXIT_FAILED_FILES,
    EXIT_MODEL_MISSING,
    Format,
    fail,
    load_face_analyzer,
    load_settings,
)


def analyze(
    paths: list[Path] = typer.Argument(
        ..., help="images, videos and/or audio files (wav, flac, mp3, ogg, any rate)"
    ),
    fmt: Format = typer.Option(Format.text, "--format", envvar="EMOSTREAM_FORMAT"),
    no_detect: bool = typer.Option(
        False,
        "--no-detect",
        envvar="EMOSTREAM_NO_DETECT",
        help="each image is already an aligned face crop",
    ),
    fps: float | None = typer.Option(
        None, envvar="EMOSTREAM_FPS", min=0.01, help="videos: analyse about N frames per second"
    ),
    annotate: Path | None = typer.Option(
        None, envvar="EMOSTREAM_ANNOTATE", help="write annotated copies (file, or a folder)"
    ),
    smooth: float = typer.Option(
        1.0,
        envvar="EMOSTREAM_SMOOTH",
        min=0.01,
        max=1.0,
        help="videos: EMA weight of the newest frame (1 = none)",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """One face message per image or video frame, one voice message per audio window (a
    video with sound gives both; DESIGN.md schema)."""
    from emostream.analyze import AnalyzeOptions, Message, analyze_paths
    from emostream.analyze_voice import VoiceTools
    from emostream.models.voice import VoiceService
    from emostream.schema import VoiceMessage
    from emostream.stream.media import MediaError, kind_of

    settings = load_settings()
    kinds = set()
    for p in paths:
        try:
            kinds.add(kind_of(p))
        except MediaError:
            kinds.add("unknown")  # reported with its reason when its turn comes
    analyzer = load_face_analyzer(settings) if kinds != {"audio"} else None
    voice: VoiceTools | str | None = None
    if kinds & {"audio", "video"}:
        service = VoiceService.load(settings)
        if service.analyzer is not None and service.vad is not None:
            voice = VoiceTools(service.analyzer, service.vad, settings.voice)
        else:
            voice = service.unavailable
            if kinds == {"audio"}:  # nothing else could be analysed: a missing model
                raise fail(f"voice unavailable: {voice}", EXIT_MODEL_MISSING)
    opts = AnalyzeOptions(
        detect=not no_detect,
        fps=fps,
        annotate=annotate,
        smooth=smooth,
        progress=not quiet,
        max_pixels=settings.limits.max_pixels,
    )

    def emit(msg: Message) -> None:
        if fmt is Format.jsonl:
            sys.stdout.write(msg.to_json() + "\n")
            return
        if isinstance(msg, VoiceMessage):
            what = f"{msg.label} {msg.confidence:.2f}" if msg.speech else "no speech"
            sys.stdout.write(f"{msg.source} @{msg.start:.2f}-{msg.end:.2f}s: voice {what}\n")
            return
        where = msg.source if msg.pts is None else f"{msg.source} @{msg.pts:.3f}s"
        faces = (
            "; ".join(
                f"#{f.track_id} {f.label} {f.confidence:.2f} box={list(f.box)}" for f in msg.faces
            )
            or "no face"
        )
        sys.stdout.write(f"{where}: {faces}\n")

    failed = analyze_paths(
        analyzer,
        paths,
        opts,
        emit,
        lambda p, why: typer.echo(f"emostream: {why}", err=True),
        voice,
    )
    if failed:
        raise typer.Exit(EXIT_FAILED_FILES)
