"""``emostream analyze``: offline images and videos, one face message per image or frame."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from emostream.cli.common import EXIT_FAILED_FILES, Format, load_face_analyzer, load_settings


def analyze(
    paths: list[Path] = typer.Argument(..., help="images and/or videos"),
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
    """One face message per image or video frame (DESIGN.md schema)."""
    from emostream.analyze import AnalyzeOptions, analyze_paths
    from emostream.schema import FaceMessage

    settings = load_settings()
    analyzer = load_face_analyzer(settings)
    opts = AnalyzeOptions(
        detect=not no_detect,
        fps=fps,
        annotate=annotate,
        smooth=smooth,
        progress=not quiet,
        max_pixels=settings.limits.max_pixels,
    )

    def emit(msg: FaceMessage) -> None:
        if fmt is Format.jsonl:
            sys.stdout.write(msg.to_json() + "\n")
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
        analyzer, paths, opts, emit, lambda p, why: typer.echo(f"emostream: {why}", err=True)
    )
    if failed:
        raise typer.Exit(EXIT_FAILED_FILES)
