"""Run ``emostream serve`` with the browser demo mounted: ``/`` and ``/static/*``.

A stand-in until ``stream/app.py`` serves the demo itself (then this only adds nothing):

    python tests/e2e/demo_server.py --host 127.0.0.1 --port 8000

Only ever run it on loopback or inside a private network namespace (tests/e2e does the
latter through ``emostream.bench.netns.run_in_netns``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import emostream.stream
from emostream.settings import Settings
from emostream.stream.app import create_app

STATIC = Path(emostream.stream.__file__).resolve().parent / "static"


def add_demo(app: FastAPI) -> FastAPI:
    """Mount the demo page the way ``create_app`` will, unless it already does."""
    paths = {getattr(r, "path", None) for r in app.routes}
    if "/static" not in paths:
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if "/" not in paths:

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(host=args.host, port=args.port, log_level=args.log_level)
    uvicorn.run(add_demo(create_app(settings)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
