"""Process settings as a tree: each branch *is* a component's own config, so every value
has one default, in the component that uses it.

Read from keyword arguments, then ``EMOSTREAM_<BRANCH>__<FIELD>`` environment variables
(``EMOSTREAM_WORKER__MAX_BATCH=8``), then the flat names documented before the tree existed
(``EMOSTREAM_WORKER_MAX_BATCH=8``, see ``LEGACY``), then the defaults. The CLI builds its
options from these same fields (``emostream.cli.options``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from emostream.broker.broker_config import BrokerConfig
from emostream.local.config import LocalConfig
from emostream.models.batching import WorkerConfig
from emostream.models.detectors import BACKENDS, UNAVAILABLE, DetectorConfig, default_detector
from emostream.models.detectors import DEFAULT as DEFAULT_DETECTOR
from emostream.models.detectors.cascade import PhotoConfig
from emostream.models.drift import DriftConfig
from emostream.models.face import FaceModelConfig
from emostream.models.face_tracking.schedule import TrackingConfig
from emostream.models.runner import RunnerConfig
from emostream.models.voice import VoiceModelConfig
from emostream.paths import model_root
from emostream.pipeline.results_config import ResultsConfig
from emostream.stream.audiohook_config import AudioHookConfig
from emostream.stream.calls_config import CallsConfig
from emostream.stream.server_config import LimitsConfig, ServerConfig, SessionConfig
from emostream.stream.twilio_config import TwilioConfig

PREFIX = "EMOSTREAM_"

#: The flat names of the first releases (``EMOSTREAM_<NAME>``, or ``Settings(name=...)``)
#: and where each lives in the tree now. They keep working; new settings get no flat name.
LEGACY: dict[str, tuple[str, str]] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "api_tokens": ("server", "api_tokens"),
    "cors_origins": ("server", "cors_origins"),
    "max_body_bytes": ("limits", "max_body_bytes"),
    "max_pixels": ("limits", "max_pixels"),
    "max_sdp_bytes": ("limits", "max_sdp_bytes"),
    "predict_concurrency": ("limits", "predict_concurrency"),
    "ice_servers": ("session", "ice_servers"),
    "max_sessions": ("session", "max_sessions"),
    "idle_timeout_s": ("session", "idle_timeout_s"),
    "session_max_side": ("session", "max_side"),
    "smoothing": ("session", "smoothing"),
    "broker": ("broker", "url"),
    "max_in_flight": ("broker", "max_in_flight"),
    "deadline_ms": ("broker", "deadline_ms"),
    "broker_codec": ("broker", "codec"),
    "broker_jpeg_quality": ("broker", "jpeg_quality"),
    "broker_stream_max_len": ("broker", "stream_max_len"),
    "claim_idle_ms": ("broker", "claim_idle_ms"),
    "worker_name": ("worker", "name"),
    "worker_max_batch": ("worker", "max_batch"),
    "worker_max_batch_cpu": ("worker", "max_batch_cpu"),
    "worker_max_batch_gpu": ("worker", "max_batch_gpu"),
    "worker_max_wait_ms": ("worker", "max_wait_ms"),
    "drain_timeout_s": ("worker", "drain_timeout_s"),
    "metrics_host": ("worker", "metrics_host"),
    "metrics_port": ("worker", "metrics_port"),
    "providers": ("runner", "providers"),
    "intra_op_threads": ("runner", "intra_op_threads"),
    "inter_op_threads": ("runner", "inter_op_threads"),
    "face_model": ("face", "model"),
    "model_alias": ("face", "alias"),
    "detector": ("detector", "type"),
    "detector_model": ("detector", "model"),
    "detector_alias": ("detector", "version"),
    "detector_score_threshold": ("detector", "score_threshold"),
    "detector_max_side": ("detector", "max_side"),
    "detector_scale_factor": ("detector", "scale_factor"),
    "detector_min_neighbors": ("detector", "min_neighbors"),
    "drift_window_size": ("drift", "size"),
    "drift_window_seconds": ("drift", "seconds"),
}


def _is_legacy(key: str, value: object) -> bool:
    # ``broker`` and ``detector`` name both a legacy leaf and a branch: a whole branch
    # (a dict or a config object) is the branch.
    return key in LEGACY and not isinstance(value, dict | BaseModel)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Legacy flat keys moved into their branch (over what the branch already says: a
    keyword argument beats the environment); other keys kept as they are."""
    out = {
        k: dict(v) if isinstance(v, dict) else v for k, v in flat.items() if not _is_legacy(k, v)
    }
    for key, value in flat.items():
        if _is_legacy(key, value):
            branch, field = LEGACY[key]
            node = out.setdefault(branch, {})
            if isinstance(node, BaseModel):
                node = out[branch] = node.model_dump(exclude_unset=True)
            if isinstance(node, dict):
                node[field] = value
    return out


def describe(loc: tuple[str | int, ...]) -> str:
    """A setting's place in the tree as people write it, with its flat name if it had one:
    ``drift.size (formerly drift_window_size)``."""
    path = ".".join(str(p) for p in loc) or "settings"
    old = next((k for k, v in LEGACY.items() if v == tuple(loc[:2]) and len(loc) == 2), None)
    return f"{path} (formerly {old})" if old else path


class _NestedEnv(EnvSettingsSource):
    """``EMOSTREAM_BROKER`` and ``EMOSTREAM_DETECTOR`` are legacy leaves (a URL, a backend
    name), not JSON for the branch of the same name: leave them to ``_LegacyEnv``."""

    def _load_env_vars(self) -> dict[str, str | None]:
        env = dict(super()._load_env_vars())
        for branch in ("broker", "detector"):
            env.pop(f"{PREFIX}{branch}".lower(), None)
            env.pop(f"{PREFIX}{branch}".upper(), None)
        return env


class _LegacyEnv(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole tree at once

    def __call__(self) -> dict[str, Any]:
        found = {
            name: os.environ[f"{PREFIX}{name.upper()}"]
            for name in LEGACY
            if f"{PREFIX}{name.upper()}" in os.environ
        }
        return _nest(found)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    model_root: Path = Field(default_factory=model_root, description="the model repository")
    log_level: str = Field(default="info", description="debug, info, warning, error")
    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    face: FaceModelConfig = Field(default_factory=FaceModelConfig)
    detector: DetectorConfig = Field(default_factory=default_detector)
    photo: PhotoConfig = Field(default_factory=PhotoConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    voice: VoiceModelConfig = Field(default_factory=VoiceModelConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    calls: CallsConfig = Field(default_factory=CallsConfig)
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)  # Twilio Media Streams
    audiohook: AudioHookConfig = Field(default_factory=AudioHookConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)  # serve --processes

    @field_validator("model_root", mode="before")
    @classmethod
    def _empty_root_is_the_default(cls, value: object) -> object:
        """``EMOSTREAM_MODEL_ROOT=`` (empty) is the default repository, as in
        ``paths.model_root``, not the current directory."""
        return model_root() if value in ("", None) else value

    @model_validator(mode="before")
    @classmethod
    def _legacy_keywords(cls, data: object) -> object:
        return _nest(data) if isinstance(data, dict) else data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _NestedEnv(settings_cls), _LegacyEnv(settings_cls))


@dataclass(frozen=True)
class Leaf:
    """One setting: its place in the tree, its pydantic field, and for a detector field the
    backend whose config declares it."""

    path: tuple[str, ...]
    field: FieldInfo
    backend: str | None = None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def env(self) -> str:
        """The nested variable: ``EMOSTREAM_WORKER__MAX_BATCH``."""
        return PREFIX + "__".join(self.path).upper()

    @property
    def flat(self) -> str | None:
        """The flat variable of the first releases, if any: ``EMOSTREAM_WORKER_MAX_BATCH``."""
        old = next((k for k, v in LEGACY.items() if v == self.path), None)
        return f"{PREFIX}{old.upper()}" if old else None

    @property
    def description(self) -> str:
        if self.path == ("detector", "type"):
            text = f"the face detector backend: {', '.join(BACKENDS)}"
            missing = "; ".join(f"{k} ({why})" for k, why in UNAVAILABLE.items())
            return text + (f"; unavailable here: {missing}" if missing else "")
        return self.field.description or ""

    @property
    def default(self) -> str | None:
        """The default as one would write it in the environment ("" for an empty list);
        None when unset."""
        if self.field.default_factory is model_root:
            return "<package>/models/artefacts"
        value = self.field.get_default(call_default_factory=True)
        if value is None:
            return None
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)


def leaves() -> list[Leaf]:
    """Every setting in the tree, in declaration order; a detector field once per backend
    that has it (``detector.type`` once)."""
    out: list[Leaf] = []
    # detector.type from the default backend's config, or the first available one's
    type_from = DEFAULT_DETECTOR if DEFAULT_DETECTOR in BACKENDS else next(iter(BACKENDS), None)
    for key, field in Settings.model_fields.items():
        models: dict[str | None, type[BaseModel]]
        if key == "detector":  # every available backend's (the default's may be missing)
            models = {name: b.config_class for name, b in BACKENDS.items()}
        else:
            branch = field.default_factory() if field.default_factory else None  # type: ignore[call-arg]
            if not isinstance(branch, BaseModel):
                out.append(Leaf((key,), field))
                continue
            models = {None: type(branch)}
        for backend, model in models.items():
            for name, info in model.model_fields.items():
                if backend is not None and name == "type":
                    if backend == type_from:
                        out.append(Leaf((key, name), info))
                    continue
                out.append(Leaf((key, name), info, backend))
    return out


def leaf(dotted: str) -> Leaf:
    """The setting ``dotted`` names (``"worker.max_batch"``); a detector field of the default
    backend first."""
    found = [x for x in leaves() if x.dotted == dotted]
    if not found:
        raise KeyError(f"no setting {dotted!r}")
    return next((x for x in found if x.backend in (None, DEFAULT_DETECTOR)), found[0])


def env_names() -> set[str]:
    """Every ``EMOSTREAM_*`` variable ``Settings`` reads: each leaf of the tree by its nested
    name (``EMOSTREAM_WORKER__MAX_BATCH``) and, where it had one, by its flat name."""
    return {f"{PREFIX}{k.upper()}" for k in LEGACY} | {x.env for x in leaves()}


def _cell(text: str | None, missing: str = "") -> str:
    return f"`{text}`" if text else missing


def reference_markdown() -> str:
    """docs/SETTINGS.md: every setting with its variables, default and description."""
    lines = [
        "# Settings",
        "",
        "Generated from the config models by `emostream settings > docs/SETTINGS.md`; a test",
        "checks that this file is current. A value comes from, first to last: a command-line",
        "flag, then `EMOSTREAM_<BRANCH>__<FIELD>`, then the flat name of the first releases",
        "(column *flat*), then the default. Lists are comma-separated (`a,b`); an empty value",
        "or `none` unsets the optional bounds (`worker.max_batch`, `drift.*`). A `detector.*`",
        "row marked with a backend applies when `EMOSTREAM_DETECTOR__TYPE` names that backend.",
        "",
        "| setting | variable | flat | default | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for x in leaves():
        name = f"`{x.dotted}`" + (f" ({x.backend})" if x.backend else "")
        text = x.description.replace("|", "\\|")
        default = _cell(x.default, "*unset*" if x.default is None else "*empty*")
        lines.append(f"| {name} | {_cell(x.env)} | {_cell(x.flat)} | {default} | {text} |")
    return "\n".join(lines) + "\n"
