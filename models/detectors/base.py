"""The face detector interface: every backend turns a BGR frame into boxes.

A backend is one file in ``plugins/`` holding its pydantic config (a ``type`` literal
naming it, the file's name) and a ``FaceDetector`` subclass that names that config in
``config_class``. ``emostream.models.detectors`` finds every such file on import, the way
Frigate's ``detector_types.py`` does, so adding a detector is adding one file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel

from emostream.pipeline.jobs import Box

#: How small (how far from the camera) the faces a detector looks for are: ``near`` a
#: webcam's or a call's, ``far`` everyone in a photo or a room, ``auto`` in between. Each
#: backend with a ``range`` field maps it onto its own working sizes or passes.
Range = Literal["near", "far", "auto"]


@dataclass(frozen=True)
class Detection:
    box: Box  # x, y, w, h in source-frame pixels
    score: float  # backend-specific confidence; higher is surer


class DetectorConfigBase(BaseModel):
    """Every backend's config: ``type`` picks the backend (``EMOSTREAM_DETECTOR__TYPE``)."""

    type: str


C = TypeVar("C", bound=DetectorConfigBase)


def with_root(config: C, model_root: Path) -> C:
    """``config`` reading the settings' model repository unless it names its own."""
    if getattr(config, "model_root", "unset") is None:
        return config.model_copy(update={"model_root": model_root})
    return config


class FaceDetector(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[DetectorConfigBase]]

    @classmethod
    @abstractmethod
    def from_config(cls, config: DetectorConfigBase, model_root: Path) -> FaceDetector:
        """The backend built from its config; ``model_root`` for repository models."""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR (or gray) frame, largest first."""

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``detect`` of each frame; a backend that can batch frames (BlazeFace) overrides
        this with one model call for them all."""
        return [self.detect(image) for image in images]

    @property
    def ref(self) -> str:
        """What ``/readyz`` and the worker's log name: a model ``name/version`` or the backend."""
        return self.name
