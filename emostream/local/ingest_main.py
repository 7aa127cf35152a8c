"""The ingest child's life: the whole HTTP app on the shared port and on its own socket.

It serves exactly what a single ``emostream serve`` serves (signalling, sessions, REST,
the demo page, /metrics collected across processes), with the local broker's ingest side
in place of the embedded broker, and the session router in front so that a request for a
session another ingest holds reaches that one.
"""

from __future__ import annotations

import os
import socket

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emostream.local.arena import Arena
from emostream.local.child import Handed
from emostream.local.ingest import LocalIngest
from emostream.settings import Settings
from emostream.stream.server_config import LimitsConfig

PROCESS_HEADER = b"x-emostream-process"


class AnsweredBy:
    """Name the ingest process that answered in every HTTP response (``ingest-<index>``):
    for an operator reading a trace, and for tests that must know which process holds a
    session (a forwarded request carries the owner's name, not the forwarder's)."""

    def __init__(self, app: ASGIApp, index: int) -> None:
        self.app = app
        self.value = f"ingest-{index}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == PROCESS_HEADER for k, _ in headers):  # relayed: kept
                    headers.append((PROCESS_HEADER, self.value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, named)


def share_limits(limits: LimitsConfig, processes: int) -> LimitsConfig:
    """This process's share of the server's REST limits: each of N ingest processes gets
    1/N of the upload, decode and thread budgets (at least one of each), so that the whole
    server stays within what the settings say, wherever the requests land. Sessions need
    no share: the hub admits them for the whole server."""

    def part(value: int) -> int:
        return max(1, -(-value // processes))  # ceil: 1/N rounded up

    return limits.model_copy(
        update={
            "predict_concurrency": part(limits.predict_concurrency),
            "decode_budget_mb": part(limits.decode_budget_mb),
            "decode_queue": part(limits.decode_queue),
            "max_upload_bytes_in_flight": part(limits.max_upload_bytes_in_flight),
        }
    )


def serve_ingest(
    settings: Settings, index: int, handed: Handed, control: socket.socket, arena: Arena
) -> None:
    import uvicorn

    from emostream.local.routing import SessionRouter, held_by
    from emostream.stream.app import AppState, create_app
    from emostream.stream.server import uvicorn_config

    settings = settings.model_copy(deep=True)
    settings.server.metrics_port = 0  # the parent serves a separate metrics port
    settings.limits = share_limits(settings.limits, len(handed.peers))
    broker = LocalIngest(settings.broker, control, arena, len(handed.peers))
    state = AppState(settings, broker)
    app = create_app(settings, state)

    routed = SessionRouter(
        app,
        me=index,
        owner=broker.owner,
        held=held_by(lambda: state.sessions),
        socket_path=handed.peers.__getitem__,
        max_body_bytes=settings.limits.max_sdp_bytes,
    )
    public = socket.socket(fileno=handed.public)
    if os.path.exists(handed.private):
        os.unlink(handed.private)  # left by this index's previous process
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind(handed.private)
    private.listen(512)
    config = uvicorn_config(AnsweredBy(routed, index), settings)
    uvicorn.Server(config).run(sockets=[public, private])
