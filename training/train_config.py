"""What every training run's configuration shares: strict sections, the optimiser, the
``section.key=value`` overrides and the YAML round trip.

Face (:mod:`face_config`) and voice (:mod:`voice_config`) add their own data, network and
augmentation sections on top; the loop (:mod:`loop`) reads only what is defined here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A section where an unknown key is an error that names it."""

    model_config = ConfigDict(extra="forbid")


class OptimConfig(Strict):
    epochs: int = Field(default=80, ge=1)
    batch_size: int = Field(default=128, ge=2)
    optimizer: Literal["sgd", "adamw"] = Field(
        default="sgd", description="SGD with Nesterov momentum, or AdamW (decoupled decay)"
    )
    lr: float = Field(default=0.05, gt=0, description="peak learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: float = Field(default=2.0, ge=0, description="linear warm-up, then cosine")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    class_weights: Literal["none", "sqrt", "inverse"] = Field(
        default="sqrt",
        description="loss weight per class from train counts: 1/sqrt(n) keeps a rare class "
        "(FER2013's disgust, 436 faces) from being ignored without swamping the others",
    )
    patience: int = Field(default=25, ge=1, description="epochs without a better holdout score")
    distill_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of the loss that follows a teacher's soft targets (distillation)",
    )
    distill_temperature: float = Field(
        default=4.0, gt=0, description="softmax temperature of the distillation loss"
    )


class RunConfig(Strict):
    """The keys the shared loop and run bookkeeping read, whatever the modality."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="bf16 autocast where the hardware has it (CUDA, AVX-512 BF16 CPUs), "
        "which trains 2-6x faster on the CPU; fp32 otherwise",
    )
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 = all cores")
    model_name: str
    experiment: str
    optim: OptimConfig = Field(default_factory=OptimConfig)

    def flat(self) -> dict[str, Any]:
        """``section.key -> value``: MLflow params and the override syntax use these names."""
        return flatten(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """A config dump as ``section.key -> value`` (the names ``--set`` and MLflow use)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = value

    walk("", tree)
    return out


C = TypeVar("C", bound=RunConfig)


class ConfigError(ValueError):
    """A config file or override the run cannot use; says which and why."""


def _set(tree: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {k} is not a section")
        node = child
    node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None


def load_into(model: type[C], path: Path | None, overrides: list[str] | None) -> C:
    """The file's values (if any), then each ``section.key=value`` override, validated."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top")
        tree = loaded.get("train", loaded) if "train" in loaded else loaded
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        _set(tree, key.strip(), value.strip())
    try:
        return model.model_validate(tree)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
