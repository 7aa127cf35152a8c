"""``EMOSTREAM_AUDIOHOOK__*``: who may stream Genesys AudioHook calls, and the limits each
connection lives under (``stream/transports/audiohook/``).

Here, beside the other configs, and not in the transport's package: ``emostream.settings``
(the core) never imports a transport (``tests/test_layers.py``).
"""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, Field, SecretStr, field_validator


class AudioHookConfig(BaseModel):
    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="JSON object: each API key Genesys may send (X-API-KEY) -> its client "
        'secret, base64 ("" = that key sends no signature); none = every connection is '
        "refused",
    )
    max_sessions_per_key: int = Field(
        default=8, ge=1, description="connections open at once per API key; more get 429"
    )
    owner_token: str = Field(
        default="",
        description="one of server.api_tokens: its holder reads AudioHook sessions' events "
        "and summaries; empty = their session tokens only (or anyone, on an open server)",
    )
    max_frame_bytes: int = Field(
        default=65536,
        ge=1024,
        le=1024 * 1024,
        description="largest text or audio message; larger ends the call",
    )
    idle_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="disconnect a socket that sends nothing this long (until then its session "
        "is kept: session.idle_timeout_s does not end a quiet, paused call)",
    )
    close_drain_s: float = Field(
        default=3.0,
        ge=0,
        description="after the client's close, wait this long at most for the last windows' "
        "results before answering closed",
    )
    clock_skew_s: float = Field(
        default=10.0, ge=0, description="signatures: tolerated difference between clocks"
    )
    signature_max_age_s: float = Field(
        default=60.0, gt=0, description="signatures: refuse one created longer ago"
    )

    @field_validator("api_keys")
    @classmethod
    def _base64_secrets(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key, secret in keys.items():
            if not key:
                raise ValueError("an API key is empty")
            try:
                base64.b64decode(secret.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"the client secret of API key {key!r} is not base64") from None
        return keys

    def secret(self, api_key: str) -> bytes:
        """The decoded client secret of a configured ``api_key`` (``b""``: unsigned)."""
        return base64.b64decode(self.api_keys[api_key].get_secret_value())
