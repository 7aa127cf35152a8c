"""The broker's settings (``EMOSTREAM_BROKER__*``): which broker, the real-time rules, and
the Redis Streams layout and timings. One home for every default."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, Field, field_validator

Codec = Literal["jpeg", "raw"]
AudioCodec = Literal["f32", "s16"]
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class BrokerConfig(BaseModel):
    url: str = Field(
        default="memory",
        description="'memory' (worker in this process) or redis://:PASSWORD@HOST:PORT/DB "
        "(workers run separately: `emostream worker`; rediss:// = TLS)",
    )
    max_in_flight: int = Field(default=2, ge=1, description="queued frames per session")
    deadline_ms: float = Field(default=250.0, gt=0, description="older jobs are dropped")
    voice_max_in_flight: int = Field(
        default=16,
        ge=1,
        description="queued voice windows per session: windows never replace each other "
        "below this (every window counts); only a worker this far behind loses the oldest",
    )
    voice_deadline_ms: float = Field(
        default=2000.0,
        gt=0,
        description="voice windows older than this (from window end) are dropped",
    )
    # Redis Streams only
    codec: Codec = Field(default="jpeg", description="how frames travel: jpeg or raw")
    jpeg_quality: int = Field(default=90, ge=1, le=100)
    audio_codec: AudioCodec = Field(
        default="f32",
        description="how voice windows travel: f32 (exact, 96 kB per 1.5 s window) or s16 "
        "(16-bit PCM, half the bytes)",
    )
    stream_max_len: int = Field(default=2000, ge=10, description="MAXLEN ~ of job streams")
    results_max_len: int = Field(default=2000, ge=10)
    results_ttl_s: int = Field(default=60, ge=1)
    claim_idle_ms: int = Field(default=500, ge=1, description="claim a dead worker's jobs")
    claim_interval_ms: int = Field(default=250, ge=1)
    max_deliveries: int = Field(
        default=5, ge=1, description="runs of one job at most; then it is a poison: acked"
    )
    lost_after_s: float = Field(default=3.0, gt=0, description="unanswered past deadline")
    heartbeat_ms: int = Field(
        default=500,
        ge=1,
        description="how often a worker says in Redis that it is alive, and how often an "
        "ingest node looks",
    )
    worker_timeout_s: float = Field(
        default=2.0,
        ge=0,
        description="no worker heard from for this long (by Redis' clock): /readyz is 503 "
        "and each session is told once (no_worker); 0 = not watched",
    )
    socket_timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=1.0, gt=0)
    prefix: str = "emostream"
    group: str = "emostream-workers"

    @property
    def heartbeat_s(self) -> float:
        return self.heartbeat_ms / 1000.0

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000.0

    @property
    def redacted_url(self) -> str:
        """The URL as logs and ``/readyz`` show it: a password becomes ``***``."""
        return redact_url(self.url)

    @property
    def is_redis(self) -> bool:
        return self.url.startswith(REDIS_SCHEMES)

    @field_validator("url")
    @classmethod
    def _known(cls, url: str) -> str:
        if url == "memory" or url.startswith(REDIS_SCHEMES):
            return url
        raise ValueError(
            f"broker {url!r} not understood: use 'memory' or a Redis URL such as "
            "redis://127.0.0.1:6379/0"
        )


def redact_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``; a
    ``?password=`` (which redis-py also reads) likewise."""
    parts = urlsplit(url)
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        url = url.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)
    head, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k == "password" for k, _ in pairs):
        return url
    pairs = [(k, "***" if k == "password" else v) for k, v in pairs]
    return f"{head}?{urlencode(pairs, safe='*/')}"
