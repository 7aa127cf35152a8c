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
    keep_alive_s: float = Field(default=5.0, gt=0, description="close an idle connection")
    header_timeout_s: float = Field(default=10.0, gt=0, description="request line and headers")
    body_timeout_s: float = Field(default=60.0, gt=0, description="whole request body")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="request line + headers")
    max_connections: int = Field(default=512, ge=1, description="served at once; more get 503")
    ssl_certfile: str | None = Field(
        default=None, description="TLS certificate chain (PEM): serve HTTPS"
    )
    ssl_keyfile: str | None = Field(
        default=None, description="its private key (PEM), unless in the certificate file"
    )


class LimitsConfig(BaseModel):
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="upload size")
    max_pixels: int = Field(default=40_000_000, gt=0, description="decoded image size")
    max_sdp_bytes: int = Field(default=64 * 1024, gt=0, description="SDP offer size")
    predict_concurrency: int = Field(default=2, ge=1, description="images decoded at once")
    max_upload_bytes_in_flight: int = Field(
        default=64 * 1024 * 1024, gt=0, description="all request bodies being read; more get 503"
    )
