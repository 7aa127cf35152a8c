"""The worker's own HTTP listener: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz``.

``emostream worker`` has no web app, so prometheus_client's WSGI server carries the probes
beside the metrics. ``/readyz`` follows the rule of serve's: 503 with the reason while the
broker is unreachable or a supervised loop is down or crash-looping, and each loop's
restarts listed either way, so an orchestrator (and a person) can tell a worker that only
looks alive from one that scores.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from emostream import __version__

#: What ``/readyz`` reports: the first problem (None when ready) and each task's status.
Readiness = Callable[[], tuple[str | None, dict[str, Any]]]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes come every few seconds
        pass


def _json(start_response: StartResponse, status: int, body: dict[str, Any]) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    phrase = "200 OK" if status == 200 else "503 Service Unavailable"
    start_response(
        phrase, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def probe_app(ready: Readiness) -> WSGIApplication:
    """``/healthz``, ``/readyz``, and the metrics on every other path (as before)."""
    metrics_app = make_wsgi_app()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, 200, {"status": "ok", "version": __version__})
        if path == "/readyz":
            problem, tasks = ready()
            if problem is not None:
                return _json(
                    start_response, 503, {"ready": False, "reason": problem, "tasks": tasks}
                )
            return _json(start_response, 200, {"ready": True, "tasks": tasks})
        metrics_body: Iterable[bytes] = metrics_app(environ, start_response)
        return metrics_body

    return app


def serve_probes(host: str, port: int, ready: Readiness) -> ThreadingWSGIServer:
    """Listen in a daemon thread (like ``prometheus_client.start_http_server``)."""
    server = make_server(host, port, probe_app(ready), ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="worker-probes", daemon=True).start()
    return server
