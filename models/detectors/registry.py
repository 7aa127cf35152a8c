"""Build a detector from its config (the ``type`` field picks the backend)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from emostream.models.detectors.base import FaceDetector
from emostream.models.detectors.blazeface import BlazeFaceConfig, BlazeFaceDetector
from emostream.models.detectors.haar import HaarConfig, HaarDetector

#: Any backend's config; pydantic picks the class from ``type``.
DetectorConfig = Annotated[HaarConfig | BlazeFaceConfig, Field(discriminator="type")]


def create_detector(config: HaarConfig | BlazeFaceConfig | None = None) -> FaceDetector:
    """The default is BlazeFace (needs ``face-detector`` in the repository)."""
    config = config or BlazeFaceConfig()
    if isinstance(config, HaarConfig):
        return HaarDetector(config)
    if isinstance(config, BlazeFaceConfig):
        return BlazeFaceDetector(config)
    raise ValueError(f"unknown detector config {config!r}")
