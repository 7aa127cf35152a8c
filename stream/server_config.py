"""The HTTP server's settings (``EMOSTREAM_SERVER__*``), the limits it puts on requests
(``EMOSTREAM_LIMITS__*``), so that a bad client is refused before it costs anything, and
how sessions are admitted, read and ended (``EMOSTREAM_SESSION__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from emostream.fields import CommaList


class ServerConfig(BaseModel):
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="port to listen on")
    api_tokens: CommaList = Field(
        default_factory=list, description="bearer tokens, comma-separated; empty = no auth"
    )
    session_token_required: bool = Field(
        default=False,
        description="without api_tokens too, reading, following or ending a session needs "
        "its session_token",
    )
    metrics_token: str = Field(
        default="",
        description="bearer token for /metrics; empty = an API token when api_tokens are set",
    )
    metrics_host: str = Field(default="127.0.0.1", description="address of metrics_port")
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="serve /metrics on this port, not the main one; 0 = on the main port",
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

    @model_validator(mode="after")
    def _metrics_one_way(self) -> ServerConfig:
        if self.metrics_token and self.metrics_port:
            raise ValueError(
                "server.metrics_token guards /metrics on the main port, but server.metrics_port "
                "moves it to a listener without authentication: protect that one by its "
                "address (server.metrics_host) and leave metrics_token empty"
            )
        return self


class LimitsConfig(BaseModel):
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="upload size")
    max_pixels: int = Field(default=40_000_000, gt=0, description="decoded image size")
    max_sdp_bytes: int = Field(default=64 * 1024, gt=0, description="SDP offer size")
    predict_concurrency: int = Field(
        default=2, ge=1, description="threads decoding and analysing images and recordings"
    )
    rest_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="those threads run this much nicer than live sessions (Linux), so an "
        "upload burst takes the CPU sessions leave; 0 = the same priority",
    )
    decode_budget_mb: int = Field(
        default=1024,
        ge=1,
        description="memory images and recordings being decoded may take at once, reserved "
        "from each header before decoding (a 40 MP image: 240 MB); more wait",
    )
    decode_queue: int = Field(
        default=16, ge=0, description="requests waiting for decode budget; more get 503"
    )
    decode_wait_s: float = Field(
        default=30.0, gt=0, description="longest wait for decode budget; then 503"
    )
    max_upload_bytes_in_flight: int = Field(
        default=64 * 1024 * 1024, gt=0, description="all request bodies being read; more get 503"
    )
    max_recording_bytes: int = Field(
        default=50 * 1024 * 1024,
        gt=0,
        description="a recording sent to /v1/analyze (held in memory, never on disk); keep it "
        "under max_upload_bytes_in_flight",
    )
    max_recording_s: float = Field(
        default=3600.0,
        gt=0,
        description="seconds of media /v1/analyze and emostream analyze take from one file "
        "(from its header when it says, else while decoding)",
    )


class SessionConfig(BaseModel):
    """``EMOSTREAM_SESSION__*``: how sessions are admitted, read and ended."""

    max_sessions: int = Field(default=32, ge=1, description="sessions open at once")
    max_sessions_per_owner: int = Field(
        default=0,
        ge=0,
        description="sessions one API token (or AudioHook key, Twilio account) may hold open "
        "at once, so one client cannot lock the others out; 0 = no quota beyond max_sessions",
    )
    idle_timeout_s: float = Field(default=10.0, gt=0, description="end a silent session")
    max_side: int = Field(default=640, ge=64, description="frames downscaled once on arrival")
    max_video_kbps: int = Field(
        default=600,
        ge=100,
        description="the REMB each video receiver announces: senders stay under it "
        "(ample for a face at 640 px) and still back off on loss "
        "(stream/transports/webrtc/remb.py)",
    )
    convert_threads: int = Field(
        default=2, ge=1, description="threads converting frames, shared by all sessions"
    )
    smoothing: float = Field(default=1.0, gt=0, le=1, description="EMA weight; 1 = raw")
    max_subscribers: int = Field(default=8, ge=1, description="SSE streams open per session")
    ice_servers: CommaList = Field(
        default_factory=list, description="STUN/TURN URLs; none by default (local only)"
    )
