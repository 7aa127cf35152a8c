"""``emostream serve``: the signalling API, WebRTC sessions, the demo page and /metrics."""

from __future__ import annotations

import logging

import typer

from emostream.cli.common import EXIT_USAGE, fail
from emostream.cli.options import setting, with_settings
from emostream.settings import Settings


@with_settings(
    setting("server.host"),
    setting("server.port"),
    setting("broker.url", "--broker"),
    setting("local.processes"),
    setting("local.inference"),
    setting("log_level"),
)
def serve(settings: Settings) -> None:
    """Start the server: WebRTC sessions, /v1/predict, /healthz, /readyz, /metrics.

    With ``--processes N`` (N > 1; by default one per usable core) N ingest processes share
    the port and ``--inference M`` processes run the models, fed through shared memory.
    """
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
    processes = settings.local.ingest_processes()
    if processes > 1 and settings.broker.is_redis:
        if settings.local.processes is not None:
            raise fail(
                "--processes above 1 runs its own local broker; with a Redis broker run one "
                "process per ingest node (--processes 1) and scale with more nodes and "
                "`emostream worker`s",
                EXIT_USAGE,
            )
        processes = 1  # the default (one per core) gives way to the Redis layout
    if processes > 1:
        from emostream.local.supervisor import launch

        typer.echo(f"emostream: {processes} ingest processes (--processes 1: one)", err=True)
        launch(settings)  # execs the supervisor; does not return
    one_blas_thread()
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
