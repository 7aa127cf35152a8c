"""How much a single-pass detector shrinks a frame, by ``range``: one home for YuNet and
RetinaFace.

Both models run at any input size, and their cost and the smallest face they find both
follow the pixels they see (each finds faces of about 10 px in its input). So the range is
a working size: ``near`` shrinks the longer side to 320 px (a webcam's or a call's face),
``auto`` to 640, and ``far`` keeps the frame's own size up to ``far_pixels``, above which it
shrinks the frame to that many pixels: the work and memory of one pass stay bounded on a
40 MP photo, and the smallest face found there is about 10 px at that size (about 22 px of
a 40 MP original at the default 8 MP). ``max_side`` overrides the range.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import BaseModel, Field

from emostream.models.detectors.base import Range
from emostream.models.detectors.boxes import scaled_size

#: The longer side a frame is shrunk to, per range (far: by ``far_pixels`` instead).
SIDES: dict[Range, int] = {"near": 320, "auto": 640}


class RangeScaled(BaseModel):
    """The working-size fields of a single-pass detector's config."""

    range: Range = Field(
        default="near",
        description="near: frames shrunk to 320 px (faces from about 1/30 of the frame: "
        "webcams, calls; the live default); auto: 640 px; far: full size up to "
        "far_pixels (everyone in a photo; the analyze and /v1/predict default)",
    )
    max_side: int | None = Field(
        default=None, ge=0, description="overrides range: the longer side; 0: full size"
    )
    far_pixels: int = Field(
        default=8_000_000,
        ge=100_000,
        description="far: a larger frame is shrunk to this many pixels, which bounds the "
        "work and memory of one pass (faces of about 10 px at that size are found)",
    )

    def working_scale(self, width: int, height: int) -> float:
        """The factor a ``width`` x ``height`` frame is shrunk by before the model (<= 1)."""
        if self.max_side is not None:
            return scaled_size(width, height, self.max_side)[0]
        if self.range == "far":
            return min(1.0, math.sqrt(self.far_pixels / max(width * height, 1)))
        return scaled_size(width, height, SIDES[self.range])[0]

    def shrunk(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        """The frame at its working size, and the factor it was shrunk by."""
        h, w = image.shape[:2]
        scale = self.working_scale(w, h)
        if scale == 1.0:
            return scale, image
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return scale, cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    @property
    def range_label(self) -> str:
        """What a detector's ``ref`` says of its working size."""
        return self.range if self.max_side is None else f"max_side {self.max_side}"
