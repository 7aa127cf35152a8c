"""FER2013 in the Kaggle folder layout: ``<root>/fer2013/<split>/<class>/*.jpg``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


def samples(data_root: Path, split: str = "val") -> list[Sample]:
    base = data_root / "fer2013" / split
    if not base.is_dir():
        raise FileNotFoundError(f"FER2013 {split} split not found at {base}")
    out = [
        Sample(p, cls)
        for cls in CLASSES
        if (base / cls).is_dir()
        for p in sorted((base / cls).glob("*.jpg"))
    ]
    if not out:
        raise FileNotFoundError(f"no images under {base}")
    return out


def load_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot read {path}")
    return img


def batches(items: list[Sample], size: int) -> Iterator[tuple[list[Sample], list[np.ndarray]]]:
    for i in range(0, len(items), size):
        chunk = items[i : i + size]
        yield chunk, [load_gray(s.path) for s in chunk]
