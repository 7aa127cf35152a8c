"""The face training run's configuration: a YAML file plus ``key=value`` overrides.

One pydantic tree, so a typo in the file or on the command line is an error that names the
field, and the exact configuration of every run is saved beside it (and in MLflow). The
defaults are the recipe of the committed model (docs/TRAINING.md); ``params.yaml`` holds the
same keys for ``dvc repro``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from emostream.training.train_config import ConfigError, OptimConfig, RunConfig, Strict, load_into

__all__ = ["ConfigError", "OptimConfig", "TrainConfig", "load_config"]


class DataConfig(Strict):
    holdout: float = Field(
        default=0.08,
        ge=0.0,
        lt=0.5,
        description="fraction of train held out (stratified) for early stopping; val is "
        "never seen before the final evaluation",
    )
    limit: int | None = Field(
        default=None,
        ge=10,
        description="train on at most this many train faces (a seeded random draw, each class "
        "about its share; tiny runs); val is never limited",
    )


class NetConfig(Strict):
    width: int = Field(default=32, ge=4, description="channels of the first stage (x2 per stage)")
    dropout: float = Field(default=0.3, ge=0.0, lt=1.0)
    tta_flip: bool = Field(
        default=True, description="the exported graph averages the face and its mirror image"
    )


class AugmentConfig(Strict):
    flip: bool = True
    shift: float = Field(default=0.1, ge=0, le=0.5, description="fraction of the side")
    scale: float = Field(default=0.15, ge=0, le=0.5, description="zoom range 1 +- scale")
    rotate: float = Field(default=12.0, ge=0, le=45, description="degrees")
    brightness: float = Field(default=0.25, ge=0, le=1)
    contrast: float = Field(default=0.25, ge=0, le=1)
    erase: float = Field(default=0.4, ge=0, le=1, description="chance of one erased rectangle")


class DistillConfig(Strict):
    teachers: list[str] = Field(
        default=[],
        description="repository versions whose mean served probabilities are the soft "
        "targets (e.g. [face-emotion/2]); empty: no distillation. optim.distill_weight sets "
        "their share of the loss (training/distil.py)",
    )


class TrainConfig(RunConfig):
    model_name: str = "face-emotion"
    experiment: str = "face-emotion"
    data: DataConfig = Field(default_factory=DataConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The file's values (if any), then each ``section.key=value`` override, validated."""
    return load_into(TrainConfig, path, overrides)
