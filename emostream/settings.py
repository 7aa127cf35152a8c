"""Process settings: every field is also an ``EMOSTREAM_<FIELD>`` environment variable.

CLI options override these; the server, workers and analysis read only this object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from emostream.models.detectors.blazeface import BlazeFaceConfig
from emostream.models.detectors.haar import HaarConfig
from emostream.models.drift import DriftConfig
from emostream.models.runner import RunnerConfig
from emostream.paths import model_root


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOSTREAM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    broker: str = "memory"
    log_level: str = "info"

    model_root: Path = Field(default_factory=model_root)
    face_model: str = "face-emotion"
    model_alias: str = "production"
    providers: Annotated[list[str] | None, NoDecode] = None
    intra_op_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)

    detector: Literal["blazeface", "haar"] = "blazeface"
    detector_model: str = "face-detector"
    detector_alias: str = "production"
    detector_score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    detector_max_side: int = Field(default=320, ge=0)
    detector_scale_factor: float = Field(default=1.2, gt=1.0)
    detector_min_neighbors: int = Field(default=5, ge=0)

    # real time (WebRTC sessions, broker, worker)
    ice_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="STUN/TURN URLs; none by default (local only)"
    )
    max_sessions: int = Field(default=32, ge=1)
    idle_timeout_s: float = Field(default=10.0, gt=0)
    session_max_side: int = Field(default=640, ge=64, description="frames downscaled once")
    smoothing: float = Field(default=1.0, gt=0, le=1, description="EMA weight; 1 = raw")
    max_in_flight: int = Field(default=2, ge=1, description="queued frames per session")
    deadline_ms: float = Field(default=250.0, gt=0, description="older jobs are dropped")
    worker_max_batch: int | None = Field(
        default=None, ge=1, description="B: frames per batch; unset = by provider (below)"
    )
    worker_max_batch_cpu: int = Field(default=16, ge=1, description="B on the CPU provider")
    worker_max_batch_gpu: int = Field(default=64, ge=1, description="B on CUDA/TensorRT")
    worker_max_wait_ms: float = Field(default=4.0, ge=0, description="T: wait after the first")
    drain_timeout_s: float = Field(default=10.0, ge=0, description="SIGTERM: finish in-flight")

    # the Redis broker and separate worker processes (`emostream worker`)
    broker_codec: Literal["jpeg", "raw"] = "jpeg"
    broker_jpeg_quality: int = Field(default=90, ge=1, le=100)
    broker_stream_max_len: int = Field(default=2000, ge=10)
    claim_idle_ms: int = Field(default=500, ge=1, description="claim a dead worker's jobs")
    worker_name: str | None = Field(default=None, description="consumer name; hostname-pid")
    metrics_host: str = Field(default="127.0.0.1", description="worker /metrics address")
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="worker /metrics port")
    max_sdp_bytes: int = Field(default=64 * 1024, gt=0)
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="bearer tokens; empty = no auth"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)
    predict_concurrency: int = Field(default=2, ge=1)

    # class drift window per model (either bound may be unset, e.g. an empty variable)
    drift_window_size: int | None = Field(default=1000, ge=1, description="last N predictions")
    drift_window_seconds: float | None = Field(
        default=600.0, gt=0, description="predictions of the last S seconds"
    )

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            items = [p.strip() for p in v.split(",") if p.strip()]
            return items or None
        return v

    @field_validator("ice_servers", "api_tokens", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("drift_window_size", "drift_window_seconds", mode="before")
    @classmethod
    def _unset(cls, v: object) -> object:
        if isinstance(v, str) and v.strip().lower() in ("", "none"):
            return None
        return v

    @model_validator(mode="after")
    def _drift_window_bounded(self) -> Settings:
        self.drift_config()  # the window's own check, at startup rather than first use
        return self

    def drift_config(self) -> DriftConfig:
        return DriftConfig(size=self.drift_window_size, seconds=self.drift_window_seconds)

    def runner(self) -> RunnerConfig:
        return RunnerConfig(
            providers=self.providers,
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
        )

    def max_batch(self, provider: str) -> int:
        """B for this provider: a GPU wants far bigger batches than a CPU."""
        if self.worker_max_batch is not None:
            return self.worker_max_batch
        if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            return self.worker_max_batch_gpu
        return self.worker_max_batch_cpu

    def detector_config(self) -> HaarConfig | BlazeFaceConfig:
        if self.detector == "blazeface":
            return BlazeFaceConfig(
                model=self.detector_model,
                version=self.detector_alias,
                model_root=self.model_root,
                score_threshold=self.detector_score_threshold,
            )
        return HaarConfig(
            max_side=self.detector_max_side,
            scale_factor=self.detector_scale_factor,
            min_neighbors=self.detector_min_neighbors,
        )
