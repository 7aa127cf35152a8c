"""``emostream client``: publish a camera, microphone or media file and print the results."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from emostream.cli.common import EXIT_FAILED_FILES, EXIT_USAGE, Format, fail, load_settings


def client(
    source: str | None = typer.Argument(None, help="a media file (video and/or audio)"),
    url: str = typer.Option(
        "http://127.0.0.1:8000", envvar="EMOSTREAM_URL", help="server base URL (JSON offer)"
    ),
    whip: str | None = typer.Option(None, envvar="EMOSTREAM_WHIP", help="publish to this WHIP URL"),
    camera: int | None = typer.Option(None, envvar="EMOSTREAM_CAMERA", help="OpenCV camera index"),
    mic: bool = typer.Option(False, envvar="EMOSTREAM_MIC", help="publish the microphone"),
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

    chosen = [x for x in (source, camera, mic or None) if x is not None]
    if len(chosen) != 1:
        raise fail("give exactly one source: a file, --camera N or --mic", EXIT_USAGE)
    settings = load_settings()

    async def run() -> int:
        if source is not None:
            if not Path(source).is_file():
                raise ClientError(f"{source}: no such file")
            src = Source.file(source)
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
        ) as c:
            typer.echo(f"emostream: session {c.session_id}", err=True)
            async for msg in c.messages(idle_timeout_s=idle):
                count += 1
                if fmt is Format.jsonl:
                    sys.stdout.write(msg.to_json() + "\n")
                elif isinstance(msg, ErrorMessage):
                    typer.echo(f"emostream: server: {msg.code}: {msg.detail}", err=True)
                elif isinstance(msg, FaceMessage):
                    faces = (
                        "; ".join(f"#{f.track_id} {f.label} {f.confidence:.2f}" for f in msg.faces)
                        or "no face"
                    )
                    sys.stdout.write(f"{msg.pts or 0:8.3f}s {faces}\n")
                else:
                    sys.stdout.write(f"{msg.start:8.3f}s voice {msg.label or '-'}\n")
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
