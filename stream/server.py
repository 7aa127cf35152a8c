"""How ``emostream serve`` runs uvicorn: its whole configuration, and the limits it lacks.

uvicorn closes a connection that idles *between* requests (``timeout_keep_alive``), but
not one that never sends a request; it has no deadline for the request head or body, so
a client sending a byte a second holds a connection (and, with a body, a task) for good;
and the replies it writes itself (400 on garbage, 503 over ``limit_concurrency``) are
plain text. ``GuardedH11`` (the h11 protocol, pinned, so httptools being installed
changes nothing) adds:

- the keep-alive timer from the moment a connection opens;
- a deadline for the request line and headers, counted from their first byte: 408;
- the connection cap (``max_connections``): 503 with ``Retry-After``;
- the head size limit (``max_header_bytes``), however the head arrived: 400 or 431;
- every reply of its own as ``{"error", "detail"}`` JSON;
- a connection answered before its body was read (413, 408, 503) drains the rest for at
  most ``body_timeout_s``, not at whatever pace the client chooses, and is then closed.

``BodyDeadline`` (ASGI) gives the whole request body ``body_timeout_s``: 408.

``WebSockets`` (uvicorn's websockets-sansio protocol, for ``/v1/twilio`` and
``/v1/audiohook``) logs no error for what a client did wrong: a refused upgrade (a denial
response: AudioHook's 401, Twilio's 403) and a text message that is not UTF-8 (closed
with 1007) were each an ERROR, the latter with a traceback, in uvicorn 0.54; such text
followed by the client's close in one read failed the connection's ``data_received``.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn._types import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
)
from uvicorn._types import Scope as UvicornScope
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from emostream import metrics
from emostream.schema import ErrorBody
from emostream.settings import Settings
from emostream.stream.errors import ApiError
from emostream.stream.server_config import ServerConfig

RETRY_AFTER_S = 1
#: The largest WebSocket message uvicorn reads; a transport refuses far smaller ones itself
#: (audiohook.max_frame_bytes, twilio.max_message_bytes); this bounds what is buffered first.
WS_MAX_BYTES = 1024 * 1024
ENDPOINT = "server"  # the metrics label of replies written here, not by a route


def _json(code: str, detail: str) -> bytes:
    metrics.REQUESTS_REJECTED.labels(ENDPOINT, code).inc()
    return ErrorBody(error=code, detail=detail).model_dump_json().encode()


def raw_reply(status: int, code: str, detail: str) -> bytes:
    """A complete HTTP/1.1 error response, for writing to a transport outside any request."""
    body = _json(code, detail)
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


async def asgi_reply(
    send: Callable[[Any], Awaitable[None]],
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str],
) -> None:
    body = _json(code, detail)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with connection, head and cap limits; see the module."""

    limits: ServerConfig = ServerConfig()  # replaced per server by ``protocol_class``

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_s  # type: ignore[assignment]
        self.head_timer: asyncio.TimerHandle | None = None
        self.drain_timer: asyncio.TimerHandle | None = None
        self.app = self._guarded(self.app)

    def _guarded(self, app: ASGI3Application) -> ASGI3Application:
        """The app behind the connection cap and the head size limit. h11 enforces
        ``max_header_bytes`` only on a head still incomplete in its buffer; one that
        arrives whole in a single read is measured here."""
        cap = self.limits.max_connections
        max_head = self.limits.max_header_bytes
        close = {"Connection": "close"}

        async def guarded(
            scope: UvicornScope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            if len(self.connections) > cap:
                detail = (
                    f"{len(self.connections)} connections are open and this server serves "
                    f"{cap} at once; retry in a moment"
                )
                headers = {"Retry-After": str(RETRY_AFTER_S), **close}
                await asgi_reply(send, 503, "server_busy", detail, headers)
                return
            if scope["type"] == "http":
                head = len(scope["raw_path"]) + len(scope["query_string"])
                head += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
                if head > max_head:
                    detail = f"the request head is about {head} bytes; the limit is {max_head}"
                    await asgi_reply(send, 431, "headers_too_large", detail, close)
                    return
            await app(scope, receive, send)

        return guarded

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms this only after a response: a connection that never sends a
        # request would stay open for good.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self._cancel_head()  # a whole head arrived (or the connection is ending)
        elif self.conn.trailing_data[0]:  # part of a request head
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._head_late
                )
        elif self.timeout_keep_alive_task is None:  # the end of a drained body: idle again
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _cancel_head(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_late(self) -> None:
        self.head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            detail = (
                "the request line and headers did not arrive within "
                f"{self.limits.header_timeout_s:g} s"
            )
            self.transport.write(raw_reply(408, "header_timeout", detail))
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._cancel_head()
        detail = (
            "the request is not valid HTTP/1.1 (request line, headers or framing), or its "
            f"head is over {self.limits.max_header_bytes} bytes"
        )
        self.transport.write(raw_reply(400, "bad_http_request", detail))
        self.transport.close()

    def on_response_complete(self) -> None:
        early = self.conn.their_state is h11.SEND_BODY  # answered before the body was read
        super().on_response_complete()
        if early and not self.transport.is_closing():
            # uvicorn reads and drops the rest, so that the connection can serve the next
            # request (the client may not know it was refused early); at the client's
            # pace, that could last for good: it gets body_timeout_s.
            self.drain_timer = self.loop.call_later(self.limits.body_timeout_s, self._drain_late)

    def _drain_late(self) -> None:
        self.drain_timer = None
        if self.conn.their_state is h11.SEND_BODY:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        if self.drain_timer is not None:
            self.drain_timer.cancel()
        super().connection_lost(exc)


def protocol_class(limits: ServerConfig) -> type[GuardedH11]:
    """``GuardedH11`` bound to one server's settings (uvicorn builds protocols itself)."""
    return type("GuardedH11", (GuardedH11,), {"limits": limits})


class WebSockets(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol without two errors it logs for a client's
    mistakes (see the module)."""

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        # A denial response sent in full ends the handshake, as in uvicorn's wsproto
        # protocol; left incomplete, uvicorn logs "ASGI callable returned without completing
        # handshake." at ERROR once the route returns (Kludex/uvicorn#3138).
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True

    def send_receive_event_to_app(self) -> None:
        """Text that is not UTF-8 is closed with 1007, as uvicorn does, but without the
        traceback uvicorn logs (its ``UnicodeDecodeError``): the client's error, not ours.
        Where the client's close came in the same read (the connection is closing already)
        the text is dropped: uvicorn's 1007 then raised ``InvalidState`` out of
        ``data_received``, and the close that follows ends the connection anyway."""
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = b"".join(self.frames)
            if not data.isascii():  # ASCII (nearly every message) is UTF-8: no decode here
                try:
                    data.decode()
                except UnicodeDecodeError:
                    self.frames = []
                    if self.conn.state is State.OPEN:
                        self.conn.send_close(1007, "text that is not UTF-8")
                        self.handle_parser_exception()  # tells the route (1007), closes
                    return
        super().send_receive_event_to_app()


class BodyDeadline:
    """The whole request body must arrive within ``seconds`` of the request head: 408.

    The deadline covers reads of the body only; once it is complete, later ``receive``
    calls (waiting for a disconnect, as streaming responses do) pass through untimed. The
    408 is raised as an ``ApiError`` from ``receive``, so the route's own error handling
    answers it; if it escapes before a response started, it is answered here.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                detail = f"the request body did not arrive within {self.seconds:g} s"
                raise ApiError(408, "body_timeout", detail, {"Connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except ApiError as exc:
            if started:
                raise
            await asgi_reply(send, exc.status, exc.code, exc.detail, exc.headers)


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """Everything ``emostream serve`` tells uvicorn, from ``settings``."""
    s = settings.server
    return uvicorn.Config(
        BodyDeadline(app, s.body_timeout_s),
        host=s.host,
        port=s.port,
        http=protocol_class(s),
        ws=WebSockets,  # the WebSocket transports: /v1/twilio, /v1/audiohook
        ws_max_size=WS_MAX_BYTES,
        ws_per_message_deflate=False,  # mu-law, base64 and PCM barely compress: CPU for nothing
        h11_max_incomplete_event_size=s.max_header_bytes,
        ssl_certfile=s.ssl_certfile,
        ssl_keyfile=s.ssl_keyfile,
        log_level=settings.log_level.lower(),
    )
