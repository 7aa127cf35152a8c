"""A session's every request reaches the child process that holds it, whichever accepted it.

With ``serve --processes N`` the kernel gives each connection to whichever child accepts
first, so ``DELETE``, status, summary, the SSE events and the WHIP resource of a session
can land on a child that does not hold it. ``SessionRouter`` (ASGI, in front of the app)
answers those itself when its own ``SessionManager`` holds the session (``held``), else
asks the supervisor's directory (``owner``) and, when another child owns it, relays the
request over that child's private Unix socket (the same app) and streams the answer back,
an event stream event by event. When no child owns it, or the owner does not answer
(its process just died, and its sessions with it), the request goes on here as for any
session this child does not hold: the route's own 401, 404 or ended-call summary, so a
stranger learns no more than from one process and nothing answers 500.

Which paths are a session's is read from the app: every path of its API with a
``{session_id}`` parameter. The WebSocket routes (Twilio, AudioHook) open their session on
the connection itself, so they stay where they were accepted. A relayed request carries
``X-Emostream-Routed`` and is never relayed again, whatever the directory says (no loops);
a client that sends it itself only keeps its own request where it landed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import httpx
from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from emostream import metrics
from emostream.stream.errors import error_response
from emostream.stream.session_manager import SessionManager

log = logging.getLogger(__name__)

ROUTED_HEADER = b"x-emostream-routed"  # set on a relayed request: answer it here
CONNECT_TIMEOUT_S = 5.0  # reaching a live sibling's Unix socket takes microseconds
#: per connection, never relayed (RFC 9110 7.6.1); uvicorn writes its own date and server
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
UPSTREAM_OWN = HOP_BY_HOP | {b"date", b"server"}

Owner = Callable[[str], Awaitable[int | None]]


@dataclass(frozen=True)
class SessionPath:
    """One session-scoped route: its template (the metrics' endpoint label) and pattern."""

    template: str
    pattern: re.Pattern[str]


def session_paths(app: FastAPI) -> list[SessionPath]:
    """Every path of ``app``'s API with a ``{session_id}`` parameter (its OpenAPI schema:
    the public list of its HTTP routes; WebSocket routes are not in it)."""
    templates = [t for t in app.openapi()["paths"] if "{session_id}" in t]
    return [SessionPath(t, compile_path(t)[0]) for t in templates]


def held_by(manager: Callable[[], SessionManager | None]) -> Callable[[str], bool]:
    """``held`` for a child: a session live here, or an ended call whose summary is kept
    here (the summary route answers it from this process)."""

    def held(session_id: str) -> bool:
        m = manager()
        return m is not None and (m.get(session_id) is not None or session_id in m.ended)

    return held


class _Unreachable(Exception):
    """The owner gave no answer (no socket, refused, closed before its response)."""


class _TooLarge(Exception):
    """The body passed ``max_body_bytes`` (declared, or while it came)."""


class _Gone(Exception):
    """The client went away while its body was being relayed."""


class _Body:
    """The request body on its way to the owner, kept (it is bounded) so that it can be
    replayed to this child's app if the owner never answers."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive, self.limit = receive, limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False

    async def stream(self) -> AsyncIterator[bytes]:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk: bytes = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.limit:
                raise _TooLarge
            self.chunks.append(chunk)
            self.done = not message.get("more_body", False)
            if chunk:
                yield chunk

    async def replay(self) -> Message:
        """``receive`` for this child's app: what was read, then the rest as it comes."""
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {
                "type": "http.request",
                "body": chunk,
                "more_body": bool(self.chunks) or not self.done,
            }
        return await self.receive()


class SessionRouter:
    """ASGI: relays a request for a session another child holds to that child.

    ``me``: this child's index; ``owner``: the directory's answer for a session id (None
    when no child holds it or it cannot tell; it must not raise); ``held``: whether this
    child holds it (``held_by``); ``socket_path``: a child's private Unix socket;
    ``max_body_bytes``: the largest body relayed (more is a 413, as ``read_limited``).
    """

    def __init__(
        self,
        app: FastAPI,
        *,
        me: int,
        owner: Owner,
        held: Callable[[str], bool],
        socket_path: Callable[[int], str],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.paths = session_paths(app)
        self.me, self.owner, self.held = me, owner, held
        self.socket_path = socket_path
        self.max_body_bytes = max_body_bytes
        self._clients: dict[str, httpx.AsyncClient] = {}
        for outcome in metrics.ROUTED_OUTCOMES:
            metrics.REQUESTS_ROUTED.labels(outcome)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._session(scope) if scope["type"] == "http" else None
        peer = None if found is None else await self._peer(scope, found[1])
        if found is None or peer is None:
            await self.app(scope, receive, send)
            return
        template = found[0]
        body = _Body(receive, self.max_body_bytes)
        try:
            await self._relay(peer, scope, body, send)
        except _Unreachable as exc:
            metrics.REQUESTS_ROUTED.labels("unreachable").inc()
            log.warning("child %d did not answer for %s (%s): answered here", peer, template, exc)
            await self.app(scope, body.replay, send)
        except _TooLarge:
            limit = self.max_body_bytes
            detail = f"body exceeds the limit of {limit} bytes"
            await error_response(413, "body_too_large", detail, template)(scope, receive, send)
        except _Gone:
            return

    def _session(self, scope: Scope) -> tuple[str, str] | None:
        """The route template and session id of a session-scoped path, else None."""
        path: str = scope["path"]
        for p in self.paths:
            m = p.pattern.match(path)
            if m is not None:
                return p.template, m["session_id"]
        return None

    async def _peer(self, scope: Scope, session_id: str) -> int | None:
        """The child to relay to, or None to answer here."""
        if any(k == ROUTED_HEADER for k, _ in scope["headers"]) or self.held(session_id):
            return None
        peer = await self.owner(session_id)
        return None if peer is None or peer == self.me else peer

    def _client(self, peer: int) -> httpx.AsyncClient:
        """One client per sibling socket. A connection per request, never kept alive: a
        Unix connect costs microseconds, and a kept one the sibling closes as idle just as
        it is reused would fail like a dead sibling and be answered here. No connection
        cap: the public listener's ``max_connections`` bounds what comes in."""
        path = self.socket_path(peer)
        client = self._clients.get(path)
        if client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            transport = httpx.AsyncHTTPTransport(uds=path, limits=limits)
            timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_S)  # SSE: no read timeout
            client = httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)
            self._clients[path] = client
        return client

    async def _relay(self, peer: int, scope: Scope, body: _Body, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        headers.append((ROUTED_HEADER, str(self.me).encode()))
        declared = dict(scope["headers"]).get(b"content-length")
        chunked = any(k == b"transfer-encoding" for k, _ in scope["headers"])
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _TooLarge
        has_body = chunked or (declared is not None and declared != b"0")
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        client = self._client(peer)
        request = client.build_request(
            scope["method"],
            "http://child" + target.decode("latin-1"),
            headers=headers,
            content=body.stream() if has_body else None,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _Unreachable(str(exc) or type(exc).__name__) from exc
        try:
            metrics.REQUESTS_ROUTED.labels("relayed").inc()
            raw = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in UPSTREAM_OWN]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": raw}
            )
            await _stream(response, body.receive, send)
        finally:
            await response.aclose()  # unread (the client left): closes the upstream request

    async def aclose(self) -> None:
        """Close the connections to the siblings (at shutdown)."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


async def _stream(response: httpx.Response, receive: Receive, send: Send) -> None:
    """The owner's body as it comes (each SSE event when it is written) until it ends or
    the client disconnects; a sibling dying mid-answer ends it where it broke."""
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError as exc:
            log.warning("a sibling's answer broke off (%s)", exc)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        tg.cancel_scope.cancel()
