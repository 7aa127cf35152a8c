"""What every session offers over HTTP, whatever transport feeds it.

- ``GET /v1/sessions/{id}/events``: Server-Sent Events, one message per ``data:``.
- ``GET /v1/sessions/{id}``: status (the transport's state, counts, the session summary).
- ``GET /v1/sessions/{id}/summary``: the call's summary (``stream/call_summary.py``), live
  and for ``calls.keep_s`` after it ended.
- ``DELETE /v1/sessions/{id}``: end it.

Who may call what is ``stream.auth``: API tokens (``EMOSTREAM_API_TOKENS``) guard all of
these when set, and a session answers only its creator or its own ``session_token``; only
the events stream reads ``?token=`` (a browser's ``EventSource`` cannot send a header).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from emostream.settings import Settings
from emostream.stream.auth import Guard
from emostream.stream.call_summary import CallSummary
from emostream.stream.errors import ApiError
from emostream.stream.fanout import SubscriberLimitError, event_stream
from emostream.stream.session import Session
from emostream.stream.session_manager import SessionManager

HEARTBEAT_S = 15.0


def manager_or_503(manager: Callable[[], SessionManager | None]) -> SessionManager:
    """The session manager, or a 503 while the models are still loading."""
    m = manager()
    if m is None:
        raise ApiError(503, "model_unavailable", "models are not loaded; see /readyz")
    return m


def router(settings: Settings, manager: Callable[[], SessionManager | None]) -> APIRouter:
    r = APIRouter()
    guard = Guard(settings.server)

    def allowed(request: Request, session_id: str, *, query: bool = False) -> Session:
        """The session, if the caller may use it; else 401, or 404 as for an unknown one
        (the credential is checked first: a stranger learns nothing, not even a 503)."""
        m = manager()
        found = m.get(session_id) if m is not None else None
        return guard.session(request, found, session_id, query=query)

    @r.delete("/v1/sessions/{session_id}", responses={401: {}, 404: {}})
    async def end(session_id: str, request: Request) -> JSONResponse:
        allowed(request, session_id)
        await manager_or_503(manager).end(session_id)
        return JSONResponse({"ended": session_id})

    @r.get("/v1/sessions/{session_id}", responses={401: {}, 404: {}})
    async def status(session_id: str, request: Request) -> dict[str, object]:
        s = allowed(request, session_id)
        return {
            "session_id": s.id,
            "transport": s.transport,
            **s.describe(),  # WebRTC: connection, data_channel
            "frames_in": s.frames_in,
            "messages_out": s.messages_out,
            **s.view.summary(),  # latency_ms (p50/p95/p99/max), classes, voice, dropped
        }

    @r.get(
        "/v1/sessions/{session_id}/summary",
        response_model=CallSummary,
        response_model_exclude_none=True,
        responses={401: {}, 404: {}},
    )
    async def summary(session_id: str, request: Request) -> CallSummary:
        """The call so far (per role: audio, speech, classes, timeline, longest runs), or
        the ended call's, for ``calls.keep_s`` after it ended."""
        m = manager()
        live = m.get(session_id) if m is not None else None
        if live is not None:
            return guard.session(request, live, session_id).call.summary()
        ended = await m.ended_call(session_id) if m is not None else None
        return guard.session(request, ended, session_id).summary

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
