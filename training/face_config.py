"""The face training run's configuration: a YAML file plus ``key=value`` overrides.

One pydantic tree, so a typo in the file or on the command line is an error that names the
field, and the exact configuration of every run is saved beside it (and in MLflow). The
defaults are the recipe of the committed model (docs/TRAINING.md); ``params.yaml`` holds the
same keys for ``dvc repro``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    holdout: float = Field(
        default=0.08,
        ge=0.0,
        lt=0.5,
        description="fraction of train held out (stratified) for early stopping; val is "
        "never seen before the final evaluation",
    )
    limit: int | None = Field(default=None, ge=10, description="at most this many faces per split")


class NetConfig(_Strict):
    width: int = Field(default=32, ge=4, description="channels of the first stage (x2 per stage)")
    dropout: float = Field(default=0.3, ge=0.0, lt=1.0)
    tta_flip: bool = Field(
        default=True, description="the exported graph averages the face and its mirror image"
    )


class AugmentConfig(_Strict):
    flip: bool = True
    shift: float = Field(default=0.1, ge=0, le=0.5, description="fraction of the side")
    scale: float = Field(default=0.15, ge=0, le=0.5, description="zoom range 1 +- scale")
    rotate: float = Field(default=12.0, ge=0, le=45, description="degrees")
    brightness: float = Field(default=0.25, ge=0, le=1)
    contrast: float = Field(default=0.25, ge=0, le=1)
    erase: float = Field(default=0.4, ge=0, le=1, description="chance of one erased rectangle")


class OptimConfig(_Strict):
    epochs: int = Field(default=80, ge=1)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=0.05, gt=0, description="peak learning rate (SGD, Nesterov)")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: float = Field(default=2.0, ge=0, description="linear warm-up, then cosine")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    class_weights: Literal["none", "sqrt", "inverse"] = Field(
        default="sqrt",
        description="loss weight per class from train counts: 1/sqrt(n) keeps disgust "
        "(436 faces) from being ignored without swamping the others",
    )
    patience: int = Field(default=25, ge=1, description="epochs without a better holdout score")


class TrainConfig(_Strict):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="bf16 autocast where the hardware has it (CUDA, AVX-512 BF16 CPUs), "
        "which trains 2-6x faster on the CPU; fp32 otherwise",
    )
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 = all cores")
    model_name: str = "face-emotion"
    experiment: str = "face-emotion"
    data: DataConfig = Field(default_factory=DataConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)

    def flat(self) -> dict[str, Any]:
        """``section.key -> value``: MLflow params and the override syntax use these names."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: object) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}{k}.", v)
            else:
                out[prefix[:-1]] = value

        walk("", self.model_dump(mode="json"))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


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


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
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
        return TrainConfig.model_validate(tree)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
