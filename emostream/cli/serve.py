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

    from emostream.models.logmel import one_blas_thread
    from emostream.stream.app import create_app
    from emostream.stream.server import uvicorn_config

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = settings.server
    shown = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    scheme = "https" if server.ssl_certfile else "http"
    typer.echo(
        f"emostream {settings.model_root}: serving on {scheme}://{shown}:{server.port}/ "
        f"(try: curl -F file=@face.jpg {scheme}://{shown}:{server.port}/v1/predict)",
        err=True,
    )
    one_blas_thread()
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
