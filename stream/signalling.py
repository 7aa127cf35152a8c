"""WebRTC signalling and results over HTTP: WHIP, JSON offer, SSE events, session control.

- ``POST /whip`` (RFC 9725): ``application/sdp`` offer -> ``201`` with the SDP answer and a
  ``Location`` naming the session resource; ``DELETE`` on it ends the session.
- ``POST /v1/offer``: ``{"sdp", "type": "offer"}`` -> ``{"sdp", "type": "answer",
  "session_id", "session_token"}``.
- ``GET /v1/sessions/{id}/events``: Server-Sent Events, one face message per ``data:``.
- ``GET``/``DELETE /v1/sessions/{id}``: status, end.

Who may call what is ``stream.auth``: API tokens (``EMOSTREAM_API_TOKENS``) guard all of
these when set, and a session answers only its creator or its own ``session_token``
(``X-Session-Token`` on the WHIP answer); only the events stream reads ``?token=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from emostream import safejson
from emostream.settings import Settings
from emostream.stream.auth import SESSION_TOKEN_HEADER, Guard
from emostream.stream.body import read_limited
from emostream.stream.errors import ApiError
from emostream.stream.fanout import SubscriberLimitError, event_stream
from emostream.stream.sdp import SdpError, check_offer
from emostream.stream.sessions import (
    OfferRejectedError,
    Session,
    SessionLimitError,
    SessionManager,
)

HEARTBEAT_S = 15.0


class Offer(BaseModel):
    sdp: str
    type: Literal["offer"]


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"] = "answer"
    session_id: str
    session_token: str = Field(
        description="this session's own bearer token: read, follow (?token= on the events) "
        "or end it without the API token"
    )


def router(settings: Settings, manager: Callable[[], SessionManager | None]) -> APIRouter:
    r = APIRouter()
    guard = Guard(settings.server)

    def sessions() -> SessionManager:
        m = manager()
        if m is None:
            raise ApiError(503, "model_unavailable", "models are not loaded; see /readyz")
        return m

    def allowed(request: Request, session_id: str, *, query: bool = False) -> Session:
        """The session, if the caller may use it; else 401, or 404 as for an unknown one
        (the credential is checked first: a stranger learns nothing, not even a 503)."""
        m = manager()
        found = m.get(session_id) if m is not None else None
        return guard.session(request, found, session_id, query=query)

    async def start(offer_sdp: str, owner: bytes | None) -> Session:
        try:
            check_offer(offer_sdp, settings.limits.max_sdp_bytes)
            return await sessions().create(offer_sdp, owner)
        except SdpError as exc:
            raise ApiError(exc.status, exc.code, exc.detail) from None
        except SessionLimitError as exc:
            raise ApiError(503, "too_many_sessions", str(exc)) from None
        except OfferRejectedError as exc:  # aiortc's verdict on what check_offer let through
            raise ApiError(400, "bad_sdp", str(exc)) from None

    @r.post(
        "/v1/offer", response_model=Answer, responses={400: {}, 401: {}, 413: {}, 415: {}, 503: {}}
    )
    async def offer(request: Request) -> Answer:
        owner = guard.caller(request)
        body = await read_limited(request, settings.limits.max_sdp_bytes + 1024)
        try:
            data = Offer.model_validate(safejson.loads(body))
        except (ValueError, ValidationError) as exc:
            raise ApiError(
                400, "bad_offer", f'send {{"sdp": ..., "type": "offer"}}: {exc}'.splitlines()[0]
            ) from None
        session = await start(data.sdp, owner)
        return Answer(
            sdp=session.pc.localDescription.sdp, session_id=session.id, session_token=session.secret
        )

    @r.post(
        "/whip",
        status_code=201,
        response_class=Response,
        responses={201: {"content": {"application/sdp": {}}}, 400: {}, 401: {}, 413: {}, 415: {}},
    )
    async def whip(request: Request) -> Response:
        owner = guard.caller(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise ApiError(
                415,
                "unsupported_media_type",
                f"WHIP needs Content-Type application/sdp, got {ctype or '(none)'!r}",
            )
        body = await read_limited(request, settings.limits.max_sdp_bytes)
        session = await start(body.decode("utf-8", errors="replace"), owner)
        return Response(
            session.pc.localDescription.sdp,
            status_code=201,
            media_type="application/sdp",
            headers={
                "Location": f"/whip/{session.id}",
                "ETag": session.id,
                SESSION_TOKEN_HEADER: session.secret,
            },
        )

    @r.delete("/whip/{session_id}", responses={401: {}, 404: {}})
    @r.delete("/v1/sessions/{session_id}", responses={401: {}, 404: {}})
    async def end(session_id: str, request: Request) -> JSONResponse:
        allowed(request, session_id)
        await sessions().end(session_id)
        return JSONResponse({"ended": session_id})

    @r.patch("/whip/{session_id}", responses={401: {}, 404: {}, 405: {}})
    async def trickle(session_id: str, request: Request) -> JSONResponse:
        allowed(request, session_id)
        raise ApiError(
            405,
            "trickle_not_supported",
            "this server answers with all candidates; trickle ICE is not needed",
        )

    @r.get("/v1/sessions/{session_id}", responses={401: {}, 404: {}})
    async def status(session_id: str, request: Request) -> dict[str, object]:
        s = allowed(request, session_id)
        return {
            "session_id": s.id,
            "connection": s.pc.connectionState,
            "frames_in": s.frames_in,
            "messages_out": s.messages_out,
            "data_channel": s.channel is not None,
            **s.view.summary(),  # latency_ms (p50/p95/p99/max), classes, dropped
        }

    @r.get(
        "/v1/sessions/{session_id}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 401: {}, 404: {}, 429: {}},
    )
    async def events(session_id: str, request: Request) -> StreamingResponse:
        s = allowed(request, session_id, query=True)  # EventSource: ?token=
        try:
            queue = s.subscribe()
        except SubscriberLimitError as exc:
            raise ApiError(429, "too_many_subscribers", str(exc)) from None
        return StreamingResponse(
            event_stream(s.subscribers, queue, s.id, HEARTBEAT_S),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return r
