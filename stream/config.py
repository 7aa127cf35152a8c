"""The HTTP server's settings (``EMOSTREAM_SERVER__*``) and the limits it puts on requests
(``EMOSTREAM_LIMITS__*``), so that a bad client is refused before it costs anything."""

from __future__ import annotations

from pydantic import BaseModel, Field

from emostream.fields import CommaList


class ServerConfig(BaseModel):
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="port to listen on")
    api_tokens: CommaList = Field(
        default_factory=list, description="bearer tokens, comma-separated; empty = no auth"
    )
    cors_origins: CommaList = Field(default_factory=list, description="browser origins allowed")


class LimitsConfig(BaseModel):
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="upload size")
    max_pixels: int = Field(default=40_000_000, gt=0, description="decoded image size")
    max_sdp_bytes: int = Field(default=64 * 1024, gt=0, description="SDP offer size")
    predict_concurrency: int = Field(default=2, ge=1, description="images decoded at once")
