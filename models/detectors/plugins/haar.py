"""OpenCV's bundled Haar cascade (frontal face), run on a downscaled, equalised copy.

Cost grows with pixels and pyramid levels, so the frame is shrunk to ``max_side`` first and
the pyramid steps by ``scale_factor``; at 320 px and 1.2 it finds the faces of a webcam or
call frame several times faster than the full-frame, 1.1-step defaults (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from emostream.models.detectors.base import Detection, DetectorConfigBase, FaceDetector


class HaarConfig(DetectorConfigBase):
    type: Literal["haar"] = "haar"
    cascade: str = "haarcascade_frontalface_default.xml"
    max_side: int = Field(default=320, ge=0, description="working size; 0 keeps full size")
    scale_factor: float = Field(default=1.2, gt=1.0)
    min_neighbors: int = Field(default=5, ge=0)
    min_size: int = Field(default=24, ge=8, description="smallest face, working-size pixels")
    equalize: bool = True

    @field_validator("max_side")
    @classmethod
    def _usable_size(cls, v: int) -> int:
        if 0 < v < 64:
            raise ValueError("max_side must be 0 (full size) or at least 64 pixels")
        return v


class HaarDetector(FaceDetector):
    name = "haar"
    config_class = HaarConfig

    @classmethod
    def from_config(cls, config: DetectorConfigBase, model_root: Path) -> HaarDetector:
        assert isinstance(config, HaarConfig)
        return cls(config)

    def __init__(self, config: HaarConfig | None = None) -> None:
        self.config = config or HaarConfig()
        path = cv2.data.haarcascades + self.config.cascade  # type: ignore[attr-defined]
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise FileNotFoundError(f"Haar cascade not found: {path}")

    def detect(self, image: np.ndarray) -> list[Detection]:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        cfg = self.config
        s = min(1.0, cfg.max_side / max(h, w)) if cfg.max_side else 1.0
        if s < 1.0:
            gray = cv2.resize(
                gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
            )
        if cfg.equalize:
            gray = cv2.equalizeHist(gray)
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=cfg.scale_factor,
            minNeighbors=cfg.min_neighbors,
            minSize=(cfg.min_size, cfg.min_size),
            outputRejectLevels=True,
        )
        out = []
        for (x, y, bw, bh), wt in zip(boxes, np.ravel(weights), strict=False):
            box = (round(x / s), round(y / s), round(bw / s), round(bh / s))
            out.append(Detection(box, float(wt)))
        out.sort(key=lambda d: d.box[2] * d.box[3], reverse=True)
        return out
