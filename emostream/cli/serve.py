"""``emostream serve``: the signalling API, WebRTC sessions, the demo page and /metrics."""

from __future__ import annotations

import logging

import typer

from emostream.cli.options import setting, with_settings
from emostream.settings import Settings


@with_settings(
    setting("server.host"),
    setting("server.port"),
    setting("broker.url", "--broker"),
    setting("log_level"),
)
def serve(settings: Settings) -> None:
    """Start the server: WebRTC sessions, /v1/predict, /healthz, /readyz, /metrics."""
    import uvicorn

    from emostream.stream.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = settings.server
    shown = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    typer.echo(
        f"emostream {settings.model_root}: serving on http://{shown}:{server.port}/ "
        f"(try: curl -F file=@face.jpg http://{shown}:{server.port}/v1/predict)",
        err=True,
    )
    uvicorn.run(
        create_app(settings),
        host=server.host,
        port=server.port,
        log_level=settings.log_level.lower(),
    )
