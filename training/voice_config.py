"""The voice training run's configuration (YAML + ``--set section.key=value``).

Shares the optimiser, seed, device and precision keys with the face run
(:mod:`config`); adds the speaker split, the corpora, the network and the augmentation.
The defaults are the recipe of the committed voice-emotion model (docs/TRAINING.md), which
was trained with ``data.val_speakers=[]`` (actors 01-16, no early stopping), plus speed
perturbation (``augment.speeds``), which came later (issue 25) and which its own
``config.yaml`` does not have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from emostream.training.train_config import ConfigError, OptimConfig, RunConfig, Strict, load_into
from emostream.training.voice_augment import AugmentConfig

__all__ = ["ConfigError", "VoiceTrainConfig", "load_voice_config"]


class VoiceDataConfig(Strict):
    corpus: str = Field(
        default="auto", description="auto, ravdess, tess, crema-d, emo-db or nemo (file naming)"
    )
    test_speakers: list[str] = Field(
        default=["17", "18", "19", "20"],
        description="held out for the final evaluation only (RAVDESS 17, 19 male; 18, 20 female)",
    )
    val_speakers: list[str] = Field(
        default=["15", "16"], description="held out for early stopping (15 male, 16 female)"
    )

    @field_validator("test_speakers", "val_speakers", mode="before")
    @classmethod
    def _ids_as_written(cls, value: object) -> object:
        """YAML reads ``[01, 17]`` as numbers: RAVDESS and EMO-DB ids are two digits."""
        if isinstance(value, list):
            return [f"{v:02d}" if isinstance(v, int) else v for v in value]
        return value

    crops_per_clip: int = Field(
        default=2, ge=1, le=16, description="random 1.5 s windows of each clip per epoch"
    )
    floor_db: float = Field(
        default=35.0, gt=0, description="speech is where frames are within this of the peak"
    )
    train_corpora: list[str] | None = Field(
        default=None,
        description="train on these corpora's clips only (all are still held out and "
        "scored); default every corpus in the data",
    )
    corpus_balance: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="how evenly corpora share an epoch: each clip is drawn with weight "
        "n_corpus^-balance (0: every clip alike, 1: every corpus alike)",
    )
    epoch_windows: int | None = Field(
        default=None,
        ge=1,
        description="windows per epoch (default crops_per_clip x training clips)",
    )
    limit: int | None = Field(
        default=None,
        ge=2,
        description="train on at most this many clips of the train speakers (a seeded random "
        "draw; tiny runs); val and test speakers keep all of theirs",
    )


class VoiceNetConfig(Strict):
    width: int = Field(default=32, ge=4, description="channels of the first stage (x2 per stage)")
    stages: list[int] = Field(default=[1, 1, 1, 1], description="convolutions per stage")
    dropout: float = Field(default=0.3, ge=0.0, lt=1.0)


class VoiceOptimConfig(OptimConfig):
    """The shared optimiser keys with the voice recipe's defaults (AdamW: a small data set,
    where SGD's learning rate is harder to get right)."""

    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=64, ge=2)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(default=2e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_epochs: float = Field(default=3.0, ge=0)
    patience: int = Field(default=20, ge=1, description="epochs without a better val score")


class VoiceTrainConfig(RunConfig):
    model_name: str = "voice-emotion"
    experiment: str = "voice-emotion"
    optim: VoiceOptimConfig = Field(default_factory=VoiceOptimConfig)
    data: VoiceDataConfig = Field(default_factory=VoiceDataConfig)
    net: VoiceNetConfig = Field(default_factory=VoiceNetConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


def load_voice_config(
    path: Path | None = None, overrides: list[str] | None = None
) -> VoiceTrainConfig:
    return load_into(VoiceTrainConfig, path, overrides)
