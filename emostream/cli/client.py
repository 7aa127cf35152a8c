"""``emostream client``: publish a camera, microphone or media file and print the results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from emostream.cli.common import EXIT_FAILED_FILES, EXIT_USAGE, Format, fail, load_settings

if TYPE_CHECKING:
    from emostream.schema import VoiceMessage


def client(
    sources: list[str] | None = typer.Argument(
        None,
        help="media files (video and/or audio: mp4, wav, flac, mp3, ogg, ...); several "
        "files are one session, two audio files two audio tracks (agent, customer)",
    ),
    url: str = typer.Option(
        "http://127.0.0.1:8000", envvar="EMOSTREAM_URL", help="server base URL (JSON offer)"
    ),
    whip: str | None = typer.Option(None, envvar="EMOSTREAM_WHIP", help="publish to this WHIP URL"),
    camera: int | None = typer.Option(None, envvar="EMOSTREAM_CAMERA", help="OpenCV camera index"),
    mic: bool = typer.Option(False, envvar="EMOSTREAM_MIC", help="publish the microphone"),
    audio_codec: str | None = typer.Option(
        None, help="offer audio in this codec only: opus (default: all), PCMU or PCMA (G.711)"
    ),
    fmt: Format = typer.Option(Format.jsonl, "--format", envvar="EMOSTREAM_FORMAT"),
    webhook: str | None = typer.Option(
        None, envvar="EMOSTREAM_WEBHOOK", help="POST each message as JSON to this URL"
    ),
    token: str | None = typer.Option(None, envvar="EMOSTREAM_TOKEN"),
    duration: float | None = typer.Option(None, min=0.1, help="stop after N seconds"),
    idle: float = typer.Option(5.0, help="stop when no result arrives for N seconds"),
) -> None:
    """Publish a camera, microphone or media file and print the results."""
    import asyncio

    import httpx

    from emostream.schema import ErrorMessage, FaceMessage
    from emostream.stream.client import ClientError, EmotionClient, Source

    files = sources or []
    chosen = [x for x in (files or None, camera, mic or None) if x is not None]
    if len(chosen) != 1:
        raise fail("give exactly one source: files, --camera N or --mic", EXIT_USAGE)
    settings = load_settings()

    async def run() -> int:
        if files:
            for f in files:
                if not Path(f).is_file():
                    raise ClientError(f"{f}: no such file")
            src = Source.files(files)
        elif camera is not None:
            src = Source.camera(camera)
        else:
            src = Source.microphone()
        count = 0
        hook = httpx.AsyncClient(timeout=5, trust_env=False) if webhook else None
        deadline = None if duration is None else asyncio.get_running_loop().time() + duration
        async with EmotionClient(
            None if whip else url,
            source=src,
            whip=whip,
            token=token,
            ice_servers=settings.session.ice_servers,
            audio_codec=audio_codec,
        ) as c:
            typer.echo(f"emostream: session {c.session_id}", err=True)
            for track in src.tracks:
                if track.kind == "audio":
                    typer.echo(
                        f"emostream: audio track {c.mid(track)}: {src.label(track)}", err=True
                    )
            async for msg in c.messages(idle_timeout_s=idle):
                count += 1
                if fmt is Format.jsonl:
                    sys.stdout.write(msg.to_json() + "\n")
                elif isinstance(msg, ErrorMessage):
                    typer.echo(f"emostream: server: {msg.code}: {msg.detail}", err=True)
                elif isinstance(msg, FaceMessage):
                    faces = "; ".join(f"#{f.track_id} {f.text()}" for f in msg.faces) or "no face"
                    sys.stdout.write(f"{msg.pts or 0:8.3f}s {faces}\n")
                else:
                    sys.stdout.write(voice_line(msg) + "\n")
                sys.stdout.flush()
                if hook is not None and webhook is not None:
                    try:
                        await hook.post(webhook, json=msg.to_dict())
                    except httpx.HTTPError as exc:
                        typer.echo(f"emostream: webhook: {exc}", err=True)
                if deadline is not None and asyncio.get_running_loop().time() > deadline:
                    break
        if hook is not None:
            await hook.aclose()
        return count

    try:
        n = asyncio.run(run())
    except ClientError as exc:
        raise fail(str(exc), EXIT_FAILED_FILES) from None
    typer.echo(f"emostream: {n} messages", err=True)


def voice_line(msg: VoiceMessage) -> str:
    """A voice message in the text format: its span, its track, the label (or that it is
    unsure) or silence."""
    span = f"{msg.start:8.3f}s-{msg.end:.3f}s voice[{msg.track or '-'}]"
    if not msg.speech:
        return f"{span} silence"
    return f"{span} {msg.text()}"
