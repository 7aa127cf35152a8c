"""The face detector interface: every backend turns a BGR frame into boxes.

Backends live one per file (``haar.py`` …) and are created from a pydantic config by
``create_detector``, so a deployment picks one by setting, not by code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Detection:
    box: Box  # x, y, w, h in source-frame pixels
    score: float  # backend-specific confidence; higher is surer


class FaceDetector(ABC):
    name: str

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR (or gray) frame, largest first."""
