"""``EMOSTREAM_TWILIO__*``: how Twilio Media Streams are admitted and bounded.

Twilio cannot send an ``Authorization`` header or a query string on a stream, but it signs
the WebSocket upgrade with the account's auth token (``X-Twilio-Signature``): with
``auth_token`` set that signature is the credential; without it, streams need an API token
like any session (for a proxy or a test client: Twilio itself cannot send one).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator


class TwilioConfig(BaseModel):
    auth_token: str = Field(
        default="",
        description="the Twilio account's auth token: each stream's X-Twilio-Signature "
        "(HMAC-SHA1 of its URL) is checked with it; empty = API tokens as for any session",
    )
    public_url: str = Field(
        default="",
        description="the URL base Twilio connects to (wss://host, plus any path prefix a "
        "proxy removes): the signed URL is this + /v1/twilio; empty = as the request came",
    )
    owner_token: str = Field(
        default="",
        description="with auth_token and server.api_tokens: the API token that owns the "
        "streams Twilio opens (reads their events and summaries); must be one of api_tokens",
    )
    max_message_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="a WebSocket message larger than this closes the stream (1009)",
    )
    idle_timeout_s: float = Field(
        default=10.0, gt=0, description="close a stream that sends nothing for this long"
    )
    drain_s: float = Field(
        default=3.0,
        ge=0,
        description="after stop, wait at most this long for the last windows' results "
        "before the session ends",
    )

    @field_validator("public_url")
    @classmethod
    def _a_url_base(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("wss", "ws", "https", "http") or not parts.netloc:
            raise ValueError(f"public_url {value!r} is not wss://host[/prefix]")
        if parts.query or parts.fragment:
            raise ValueError("public_url takes no query or fragment")
        return value.rstrip("/")
