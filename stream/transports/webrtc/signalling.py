"""WebRTC signalling over HTTP: WHIP and the JSON offer.

- ``POST /whip`` (RFC 9725): ``application/sdp`` offer -> ``201`` with the SDP answer and a
  ``Location`` naming the session resource; ``DELETE`` on it ends the session.
- ``POST /v1/offer``: ``{"sdp", "type": "offer"}`` -> ``{"sdp", "type": "answer",
  "session_id", "session_token"}``.

What every session has whatever its transport (events, status, end) is
``stream/session_routes.py``.

Who may call what is ``stream.auth``: API tokens (``EMOSTREAM_API_TOKENS``) guard all of
these when set, and a session answers only its creator or its own ``session_token``
(``X-Session-Token`` on the WHIP answer); only the events stream reads ``?token=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from emostream import safejson
from emostream.modalities.base import ROLES, Role
from emostream.settings import Settings
from emostream.stream.auth import SESSION_TOKEN_HEADER, Guard
from emostream.stream.body import read_limited
from emostream.stream.errors import ApiError
from emostream.stream.session_manager import SessionLimitError, SessionManager
from emostream.stream.session_routes import manager_or_503
from emostream.stream.transports.webrtc.peer import OfferRejectedError, Peer, open_peer
from emostream.stream.transports.webrtc.sdp import SdpError, check_offer


class Offer(BaseModel):
    sdp: str
    type: Literal["offer"]
    roles: dict[str, Role] = Field(
        default_factory=dict,
        description="the speaker's role per audio track, by SDP mid: customer, agent or "
        "unknown (the default); calls.analyse_roles says which are analysed",
    )


def whip_roles(text: str | None) -> dict[str, Role]:
    """``?roles=0:agent,1:customer`` as {mid: role}; a 400 ``bad_roles`` naming the part."""
    roles: dict[str, Role] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        mid, _, role = part.partition(":")
        if not mid.strip() or role.strip() not in ROLES:
            raise ApiError(
                400,
                "bad_roles",
                f"roles: {part.strip()[:40]!r} is not mid:role with a role of {', '.join(ROLES)}",
            )
        roles[mid.strip()] = role.strip()  # type: ignore[assignment]
    return roles


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

    def allowed(request: Request, session_id: str) -> None:
        m = manager()
        found = m.get(session_id) if m is not None else None
        guard.session(request, found, session_id)

    async def start(offer_sdp: str, owner: bytes | None, roles: dict[str, Role]) -> Peer:
        try:
            check_offer(offer_sdp, settings.limits.max_sdp_bytes)
            return await open_peer(manager_or_503(manager), offer_sdp, owner, roles)
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
        peer = await start(data.sdp, owner, data.roles)
        s = peer.session
        return Answer(sdp=peer.answer, session_id=s.id, session_token=s.secret)

    @r.post(
        "/whip",
        status_code=201,
        response_class=Response,
        responses={201: {"content": {"application/sdp": {}}}, 400: {}, 401: {}, 413: {}, 415: {}},
    )
    async def whip(
        request: Request,
        roles: str | None = Query(
            None, description="speaker role per SDP mid: 0:agent,1:customer (else unknown)"
        ),
    ) -> Response:
        owner = guard.caller(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise ApiError(
                415,
                "unsupported_media_type",
                f"WHIP needs Content-Type application/sdp, got {ctype or '(none)'!r}",
            )
        by_mid = whip_roles(roles)
        body = await read_limited(request, settings.limits.max_sdp_bytes)
        peer = await start(body.decode("utf-8", errors="replace"), owner, by_mid)
        s = peer.session
        return Response(
            peer.answer,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/whip/{s.id}", "ETag": s.id, SESSION_TOKEN_HEADER: s.secret},
        )

    @r.delete("/whip/{session_id}", responses={401: {}, 404: {}})
    async def end(session_id: str, request: Request) -> JSONResponse:
        """The WHIP session resource: DELETE ends the session (as /v1/sessions/{id})."""
        allowed(request, session_id)
        await manager_or_503(manager).end(session_id)
        return JSONResponse({"ended": session_id})

    @r.patch("/whip/{session_id}", responses={401: {}, 404: {}, 405: {}})
    async def trickle(session_id: str, request: Request) -> JSONResponse:
        allowed(request, session_id)
        raise ApiError(
            405,
            "trickle_not_supported",
            "this server answers with all candidates; trickle ICE is not needed",
        )

    return r
