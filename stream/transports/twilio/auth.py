"""Who may open a Twilio stream, decided on the upgrade request, before the socket opens.

- With ``twilio.auth_token`` set: the ``X-Twilio-Signature`` header must be the base64
  HMAC-SHA1, keyed with the auth token, of the URL Twilio connected to (scheme, host,
  path, query; a WebSocket upgrade has no body, so no parameters are appended). Behind a
  proxy the host and scheme we see are not Twilio's: ``twilio.public_url`` gives them.
  As Twilio's own validators do, the URL is tried as is, without its port, and with the
  scheme's default port.
- Without it: ``stream.auth.Guard.caller``: an API token when ``server.api_tokens`` is
  set, nothing on an open server.

A refusal is an HTTP 403 (or close code 1008 where the server cannot send a response),
never an accepted socket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from urllib.parse import urlsplit, urlunsplit

from fastapi import Request, WebSocket

from emostream.stream.auth import Guard
from emostream.stream.errors import ApiError
from emostream.stream.server_config import ServerConfig
from emostream.stream.twilio_config import TwilioConfig

log = logging.getLogger(__name__)

SIGNATURE = "x-twilio-signature"
DEFAULT_PORTS = {"wss": 443, "https": 443, "ws": 80, "http": 80}


class Refused(Exception):
    """The upgrade is refused: ``reason`` labels the metric, ``detail`` tells the client."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def signature(auth_token: str, url: str) -> str:
    """What Twilio sends in ``X-Twilio-Signature`` for a request to ``url`` without body."""
    mac = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def port_variants(url: str) -> list[str]:
    """``url`` as given, without its port, and with the scheme's default port where it
    names none: Twilio's own validators accept each (its signing is not consistent)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return [url]
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host = hostport if port is None else hostport.rsplit(":", 1)[0]
    prefix = f"{userinfo}@" if userinfo else ""
    out = [url, urlunsplit(parts._replace(netloc=prefix + host))]
    default = DEFAULT_PORTS.get(parts.scheme)
    if port is None and default is not None:
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    return list(dict.fromkeys(out))


def request_url(ws: WebSocket, public_url: str) -> str:
    """The URL the client connected to: ``public_url`` (or the scheme and ``Host`` we
    saw) + the path as sent + the query."""
    raw: bytes = ws.scope.get("raw_path") or ws.scope["path"].encode()
    target = raw.decode("latin-1")
    query = ws.scope.get("query_string", b"").decode("latin-1")
    if query:
        target += "?" + query
    if public_url:
        return public_url + target
    host: str = ws.headers.get("host", "")
    return f"{ws.url.scheme}://{host}{target}"


class Admission:
    """The upgrade check of ``GET /v1/twilio``."""

    def __init__(self, server: ServerConfig, config: TwilioConfig) -> None:
        self.config = config
        self.guard = Guard(server)
        self.owner: bytes | None = None
        if config.owner_token:
            if config.owner_token not in server.api_tokens:
                raise ValueError("twilio.owner_token must be one of server.api_tokens")
            self.owner = hashlib.sha256(config.owner_token.encode()).digest()  # as Guard
        elif config.auth_token and server.api_tokens:
            log.warning(
                "twilio.auth_token and server.api_tokens are set but twilio.owner_token is "
                "not: no API token can read the sessions of Twilio streams"
            )

    def check(self, ws: WebSocket) -> bytes | None:
        """Who opens the stream (the owner of its session: an API token's identity, or
        ``owner_token``'s for a signed stream, None on an open server), or ``Refused``."""
        if self.config.auth_token:
            given = ws.headers.get(SIGNATURE)
            if not given:
                raise Refused("no_signature", "X-Twilio-Signature is required")
            url = request_url(ws, self.config.public_url)
            wanted = given.strip().encode("latin-1")
            token = self.config.auth_token
            ok = [
                hmac.compare_digest(wanted, signature(token, u).encode())
                for u in port_variants(url)  # every one compared: no early exit
            ]
            if not any(ok):
                raise Refused("bad_signature", "X-Twilio-Signature does not match this URL")
            return self.owner
        try:
            # Guard reads headers and the query alone; Request takes an http scope only
            owner = self.guard.caller(Request({**ws.scope, "type": "http"}))
        except ApiError as exc:
            bare = "authorization" not in ws.headers and "token" not in ws.query_params
            raise Refused("no_token" if bare else exc.code, exc.detail) from None
        return owner
