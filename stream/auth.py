"""Who may call what (docs/SECURITY.md): API tokens, per-session tokens, the metrics token.

- With ``server.api_tokens`` set, every endpoint that touches media or sessions needs one
  (``Authorization: Bearer <token>``); a session then belongs to the token that created it.
- Every session also gets its own ``session_token`` at creation: a capability for that one
  session (read, follow, end), so a browser can follow its events without the API token.
- A session that exists but is not the caller's answers 404, exactly like an unknown one,
  so nobody learns which ids are live.
- ``?token=`` is read by the events stream only (``EventSource`` cannot set headers) and
  refused everywhere else: URLs end up in logs, histories and proxies.

Credentials are compared as bytes with ``hmac.compare_digest``: the header's bytes as they
came (Starlette decodes headers as latin-1, so encoding back gives the wire bytes), the
query's as UTF-8, ours as UTF-8. A token that is not ours, ASCII or not, is a 401.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol, TypeVar

from fastapi import Request

from emostream.stream.errors import ApiError
from emostream.stream.server_config import ServerConfig


class Owned(Protocol):
    """What access to a session (live, or an ended call's summary) is checked against."""

    @property
    def owner(self) -> bytes | None: ...

    @property
    def secret(self) -> str: ...


S = TypeVar("S", bound=Owned)

QUERY = "token"
SESSION_TOKEN_HEADER = "X-Session-Token"


#: RFC 6750: a 401 names the scheme it wants.
CHALLENGE = 'Bearer realm="emostream"'


def _identity(token: bytes) -> bytes:
    """Who a token is, for session ownership, without keeping the token itself around."""
    return hashlib.sha256(token).digest()


def _unauthorized(detail: str, code: str = "unauthorized") -> ApiError:
    return ApiError(401, code, detail, {"WWW-Authenticate": CHALLENGE})


def refuse_unknown_query(request: Request) -> None:
    """The 422 ``stream/query.py`` noted for an unknown query parameter, raised once the
    caller is known: an unauthenticated request gets its 401 first, someone else's
    session its 404, and neither learns what an endpoint takes."""
    pending = getattr(request.state, "unknown_query", None)
    if pending is not None:
        raise pending


class Guard:
    def __init__(self, config: ServerConfig) -> None:
        self._api = [t.encode() for t in config.api_tokens]
        self._metrics = config.metrics_token.encode() if config.metrics_token else None
        self.session_token_required = config.session_token_required

    @property
    def closed(self) -> bool:
        """API tokens are set: media, sessions, the schema and metrics need a credential."""
        return bool(self._api)

    # -- reading the credential ---------------------------------------------------------

    @staticmethod
    def refuse_query_token(request: Request, *, query: bool = False) -> None:
        """A ``?token=`` where it is not read is a 401, whether or not tokens are set: a
        client learns on an open test server, not in production, that secrets stay out of
        URLs."""
        if not query and QUERY in request.query_params:
            raise _unauthorized(
                "?token= is read only by /v1/sessions/{id}/events (EventSource cannot send "
                "headers); send Authorization: Bearer <token> instead",
                "token_in_query",
            )

    def credential(self, request: Request, *, query: bool = False) -> bytes | None:
        """The token the request presents: the bearer header, else (``query``) ``?token=``;
        a malformed ``Authorization`` is a 401 with the reason. Read only where a
        credential is checked: an open server ignores the header (a proxy's, say)."""
        self.refuse_query_token(request, query=query)
        given = request.query_params.get(QUERY)
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "bearer":
                raise _unauthorized(
                    f"Authorization must be 'Bearer <token>', not scheme {scheme[:20]!r}",
                    "bad_authorization",
                )
            value = value.strip()
            if not value:
                raise _unauthorized("Authorization: Bearer has no token", "bad_authorization")
            return value.encode("latin-1")
        if given:
            return given.encode("utf-8")
        return None

    def _api_identity(self, token: bytes) -> bytes | None:
        """The identity of the API token ``token`` is, or None; every token is compared."""
        found = None
        for ours in self._api:
            if hmac.compare_digest(token, ours):
                found = ours
        return _identity(found) if found is not None else None

    # -- the three kinds of endpoint ----------------------------------------------------

    # -- the three kinds of endpoint: the credential first, then an unknown parameter ----

    def caller(self, request: Request) -> bytes | None:
        """For creating a session, ``/v1/predict`` and ``/openapi.json``: with tokens set, an
        API token, and the identity that then owns what it creates; None when open."""
        owner = self._caller(request)
        refuse_unknown_query(request)
        return owner

    def session(
        self, request: Request, session: S | None, session_id: str, *, query: bool = False
    ) -> S:
        """For reading, following or ending a session: its creator's API token or its own
        session token. Someone else's session is a 404, the same as an unknown one."""
        found = self._session(request, session, session_id, query=query)
        refuse_unknown_query(request)
        return found

    def metrics(self, request: Request) -> None:
        """``/metrics`` on the main port: the metrics token or an API token, when either
        is set; open otherwise."""
        self._metrics_check(request)
        refuse_unknown_query(request)

    def _caller(self, request: Request) -> bytes | None:
        if not self.closed:
            self.refuse_query_token(request)
            return None
        token = self.credential(request)
        if token is None:
            raise _unauthorized("a bearer token is required: Authorization: Bearer <token>")
        owner = self._api_identity(token)
        if owner is None:
            raise _unauthorized("the bearer token is not valid here")
        return owner

    def _session(
        self, request: Request, session: S | None, session_id: str, *, query: bool = False
    ) -> S:
        gone = ApiError(404, "unknown_session", f"no session {session_id!r} on this server")
        if not self.closed and not self.session_token_required:
            self.refuse_query_token(request, query=query)
            if session is None:
                raise gone
            return session
        token = self.credential(request, query=query)
        if token is None:
            raise _unauthorized(
                "a bearer token is required: the API token that created the session or its "
                "session_token"
            )
        owner = self._api_identity(token)
        if owner is not None:
            if session is None or session.owner is None:
                raise gone
            if not hmac.compare_digest(session.owner, owner):
                raise gone
            return session
        if session is not None and hmac.compare_digest(token, session.secret.encode()):
            return session
        raise _unauthorized("the token is neither an API token nor this session's token")

    def _metrics_check(self, request: Request) -> None:
        if self._metrics is None and not self.closed:
            self.refuse_query_token(request)
            return
        token = self.credential(request)
        if token is None:
            raise _unauthorized("/metrics needs Authorization: Bearer <metrics token>")
        if self._metrics is not None and hmac.compare_digest(token, self._metrics):
            return
        if self._api_identity(token) is None:
            raise _unauthorized("the bearer token is not valid for /metrics")
