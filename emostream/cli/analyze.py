"""``emostream analyze``: offline images, videos and audio files, one message per image,
frame or voice window; for a call recording (``--channels``, ``--summary``) the call's
summary after its messages."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from emostream.analyze_range import DetectorRange, RangeNotApplicableError, analyze_settings
from emostream.cli.common import (
    EXIT_FAILED_FILES,
    EXIT_MODEL_MISSING,
    EXIT_USAGE,
    Format,
    fail,
    load_face_analyzer,
    load_settings,
)
from emostream.settings import Settings

if TYPE_CHECKING:
    from emostream.stream.call_summary import CallSummary


def with_range(settings: Settings, chosen: DetectorRange | None) -> Settings:
    """The settings with the detector range analyze uses (``emostream.analyze_range``
    decides, as for ``/v1/predict``); ``--range`` on a detector without one exits 2."""
    try:
        return analyze_settings(settings, chosen)
    except RangeNotApplicableError:
        raise fail(
            f"--range is for the blazeface detector, not {settings.detector.type}", EXIT_USAGE
        ) from None


def parse_channels(text: str | None) -> list[str] | None:
    """``agent,customer`` as one role per channel, in order (a usage error otherwise)."""
    from emostream.modalities.base import ROLES

    if text is None:
        return None
    roles = [part.strip() for part in text.split(",")]
    bad = [r for r in roles if r not in ROLES]
    if not roles or bad:
        raise fail(
            f"--channels: {bad or text!r}: give a role per channel, of {', '.join(ROLES)}",
            EXIT_USAGE,
        )
    return roles


def summary_text(path: Path, summary: CallSummary) -> str:
    """The call's summary as a block for a person: per role, audio, speech and classes."""
    lines = [f"{path}: call summary ({', '.join(summary.models) or 'no model used'})"]
    for name, role in summary.roles.items():
        where = f"track {', '.join(role.tracks)}" if role.tracks else "no track"
        if not role.analysed:
            lines.append(f"  {name}: not analysed, {role.audio_s:.1f} s of audio ({where})")
            continue
        line = f"  {name}: {role.audio_s:.1f} s of audio, {role.speech_s or 0:.1f} s of speech"
        line += f" in {role.windows or 0} windows ({where})"
        if role.unsure:
            line += f", {role.unsure} unsure"
        if role.dominant and role.classes:
            shares = ", ".join(
                f"{k} {v:.0%}" for k, v in sorted(role.classes.items(), key=lambda kv: -kv[1])
            )
            line += f"; mostly {role.dominant}: {shares}"
        for label, span in (role.longest or {}).items():
            line += f"; longest {label} {span.start:.1f}-{span.end:.1f} s"
        lines.append(line)
    return "\n".join(lines) + "\n"


def analyze(
    paths: list[Path] = typer.Argument(
        ..., help="images, videos and/or audio files (wav, flac, mp3, ogg, webm, m4a, any rate)"
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
    detector_range: DetectorRange | None = typer.Option(
        None,
        "--range",
        help="face detector: far (default here) also tiles the frame for small, distant "
        "faces; near runs only the short-range model (webcam faces, the live default); auto "
        "runs both models on the whole frame. Default: EMOSTREAM_DETECTOR__RANGE, else far",
        show_default=False,
    ),
    channels: str | None = typer.Option(
        None,
        "--channels",
        help="a call recording's speaker role per channel, in order: agent,customer makes "
        "each channel a track of that role (calls.analyse_roles says which are analysed); "
        "implies --summary. Default: the channels mixed, one track of role unknown",
        show_default=False,
    ),
    summary: bool = typer.Option(
        False, "--summary", help="after each file's voice messages, the call's summary"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """One face message per image or video frame, one voice message per audio window.

    A video with sound gives both; the messages are docs/ARCHITECTURE.md's ("Messages").
    With --channels or --summary each recording's call summary follows its messages (the
    last JSON line with --format jsonl).
    """
    from emostream.analyze import AnalyzeOptions, Message, analyze_paths
    from emostream.models.voice import VoiceService
    from emostream.schema import VoiceMessage
    from emostream.stream.media import MediaError, kind_of

    roles = parse_channels(channels)
    settings = with_range(load_settings(), detector_range)
    kinds = set()
    for p in paths:
        try:
            kinds.add(kind_of(p))
        except MediaError:
            kinds.add("unknown")  # reported with its reason when its turn comes
    analyzer = load_face_analyzer(settings) if kinds != {"audio"} else None
    voice: VoiceService | str | None = None
    if kinds & {"audio", "video"}:
        service = VoiceService.load(settings)
        if service.analyzer is not None and service.vad is not None:
            voice = service
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
        max_audio_s=settings.limits.max_recording_s,
        channels=roles,
        analyse_roles=tuple(settings.calls.analyse_roles),
        summary=summary or roles is not None,
        unsure_below=settings.results.unsure_below,
    )

    def emit(msg: Message) -> None:
        if fmt is Format.jsonl:
            sys.stdout.write(msg.to_json() + "\n")
            return
        if isinstance(msg, VoiceMessage):
            what = msg.text()
            sys.stdout.write(f"{msg.source} @{msg.start:.2f}-{msg.end:.2f}s: voice {what}\n")
            return
        where = msg.source if msg.pts is None else f"{msg.source} @{msg.pts:.3f}s"
        faces = (
            "; ".join(f"#{f.track_id} {f.text()} box={list(f.box)}" for f in msg.faces) or "no face"
        )
        sys.stdout.write(f"{where}: {faces}\n")

    def summarize(path: Path, call: CallSummary) -> None:
        sys.stdout.write(call.to_json() + "\n" if fmt is Format.jsonl else summary_text(path, call))

    failed = analyze_paths(
        analyzer,
        paths,
        opts,
        emit,
        lambda p, why: typer.echo(f"emostream: {why}", err=True),
        voice,
        summarize,
    )
    if failed:
        raise typer.Exit(EXIT_FAILED_FILES)
