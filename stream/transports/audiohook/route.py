"""``GET /v1/audiohook``: who gets a WebSocket, before it is upgraded.

The upgrade request is answered with an HTTP error instead of ``101 Switching Protocols``
when the API key or signature fails (401), the ``audiohook-session-id`` header is not a
UUID (400), the key has ``max_sessions_per_key`` connections open already (429, so one
key cannot take every session from the others) or the models are still loading (503).
Each refusal is counted in ``emostream_protocol_errors_total{transport="audiohook"}`` and
answered with the JSON error body the other endpoints use. An accepted socket is one
:class:`~emostream.stream.transports.audiohook.server.Connection`.

The sessions belong to ``audiohook.owner_token`` (one of ``server.api_tokens``): its
holder reads their events and summaries as for any session it created.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from emostream import metrics
from emostream.schema import ErrorBody
from emostream.settings import Settings
from emostream.stream.auth import _identity
from emostream.stream.session_manager import SessionManager
from emostream.stream.transports.audiohook.auth import Authenticator, AuthError, Request, canonical
from emostream.stream.transports.audiohook.messages import is_uuid
from emostream.stream.transports.audiohook.server import TRANSPORT, Connection, Peer

log = logging.getLogger(__name__)

PATH = "/v1/audiohook"
RETRY_AFTER_S = 5


class Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


class AudioHookEndpoint:
    """Admission and per-key quotas for every AudioHook socket of one app."""

    def __init__(self, settings: Settings, manager: Callable[[], SessionManager | None]) -> None:
        config = settings.audiohook
        if config.owner_token and config.owner_token not in settings.server.api_tokens:
            raise ValueError("audiohook.owner_token must be one of server.api_tokens")
        self.config = config
        self.manager = manager
        self.auth = Authenticator(config)
        self.owner = _identity(config.owner_token.encode()) if config.owner_token else None
        self.open_per_key: Counter[str] = Counter()

    async def __call__(self, ws: WebSocket) -> None:
        try:
            peer = self._admit(ws)
        except Refused as exc:
            metrics.PROTOCOL_ERRORS.labels(TRANSPORT, exc.reason).inc()
            log.info("audiohook: upgrade refused (%s): %s", exc.reason, exc.detail)
            await _deny(ws, exc)
            return
        self.open_per_key[peer.api_key] += 1
        try:
            await ws.accept()
            await Connection(ws, peer, self.config, self.manager, self.owner).run()
        finally:
            self.open_per_key[peer.api_key] -= 1
            if self.open_per_key[peer.api_key] <= 0:
                del self.open_per_key[peer.api_key]

    def _admit(self, ws: WebSocket) -> Peer:
        def field(name: str) -> str | None:
            return canonical(ws.headers.getlist(name))

        query = ws.scope.get("query_string", b"").decode("latin-1")
        target = ws.scope.get("raw_path", ws.url.path.encode()).decode("latin-1")
        target += f"?{query}" if query else ""
        request = Request(field, target, field("host") or "")
        try:
            key = self.auth.check(request)
        except AuthError as exc:
            raise Refused(401, exc.reason, exc.detail) from None
        session_id = field("audiohook-session-id") or ""
        if not is_uuid(session_id):
            raise Refused(400, "bad_request", "the audiohook-session-id header is not a UUID")
        if self.open_per_key[key] >= self.config.max_sessions_per_key:
            raise Refused(
                429,
                "key_quota",
                f"this API key has {self.config.max_sessions_per_key} connections open, its "
                "limit (audiohook.max_sessions_per_key)",
            )
        if self.manager() is None:
            raise Refused(503, "unavailable", "models are not loaded; see /readyz")
        return Peer(
            session_id,
            key,
            field("audiohook-organization-id"),
            field("audiohook-correlation-id"),
        )


async def _deny(ws: WebSocket, refused: Refused) -> None:
    """An HTTP error in place of the upgrade (a bare 403 where the server cannot)."""
    body = ErrorBody(error=refused.reason, detail=refused.detail).model_dump()
    headers = {"WWW-Authenticate": 'AudioHook realm="emostream"'} if refused.status == 401 else {}
    if refused.status in (429, 503):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    with contextlib.suppress(RuntimeError):
        await ws.send_denial_response(JSONResponse(body, refused.status, headers))
        return
    await ws.close(1008)


def router(settings: Settings, manager: Callable[[], SessionManager | None]) -> APIRouter:
    """The AudioHook route, for ``create_app`` to include."""
    r = APIRouter()
    endpoint = AudioHookEndpoint(settings, manager)
    r.add_api_websocket_route(PATH, endpoint, name="audiohook")
    return r
