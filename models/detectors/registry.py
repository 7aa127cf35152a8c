"""Build a detector from its config (the ``type`` field picks the backend)."""

from __future__ import annotations

from emostream.models.detectors.base import FaceDetector
from emostream.models.detectors.haar import HaarConfig, HaarDetector

DetectorConfig = HaarConfig


def create_detector(config: DetectorConfig | None = None) -> FaceDetector:
    config = config or HaarConfig()
    if isinstance(config, HaarConfig):
        return HaarDetector(config)
    raise ValueError(f"unknown detector config {config!r}")
