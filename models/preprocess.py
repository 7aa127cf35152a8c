"""Turn face crops into the tensor a model card asks for.

Everything here is read from the card's ``ImageInput``: colour, size, scale/offset, layout.
Crops arrive as BGR (OpenCV's order) or already-gray 2-D arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from emostream.models.card import ImageInput

_INTERP = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
Box = tuple[int, int, int, int]


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def crop(image: np.ndarray, box: Box, margin: float = 0.0) -> np.ndarray:
    """The box (x, y, w, h) grown by ``margin`` on each side, clipped to the image."""
    x, y, w, h = box
    mx, my = round(w * margin), round(h * margin)
    ih, iw = image.shape[:2]
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(iw, x + w + mx), min(ih, y + h + my)
    return image[y0:y1, x0:x1]


def square(box: Box) -> Box:
    """The square on the box's centre whose side is the mean of its width and height.

    The emotion models learnt on square crops (FER2013's 48x48), and a crop is resized to
    the model's square input, so a tall box squashes the face. YuNet's boxes are about a
    fifth taller than wide: on 757 FER2013 val faces the model scored 0.662 on YuNet's boxes
    as they are, 0.701 on these squares, 0.696 on BlazeFace's (nearly square) boxes and 0.711
    on the whole image (docs/ARCHITECTURE.md, "Face detection")."""
    x, y, w, h = box
    side = (w + h) / 2
    return (round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), round(side), round(side))


def face_crop(image: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """What the emotion model sees of a detected face: its ``square``, grown by ``margin``."""
    return crop(image, square(box), margin)


def prepare(crops: Sequence[np.ndarray], spec: ImageInput) -> np.ndarray:
    """Stack crops into one float32 batch in the card's layout."""
    n = len(crops)
    c = spec.channels
    batch = np.empty((n, spec.height, spec.width, c), dtype=np.float32)
    interp = _INTERP[spec.interpolation]
    for i, img in enumerate(crops):
        if img.size == 0:
            raise ValueError("empty crop")
        if spec.color == "gray":
            img = to_gray(img)
        elif img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if spec.color == "rgb" and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.shape[0] != spec.height or img.shape[1] != spec.width:
            img = cv2.resize(img, (spec.width, spec.height), interpolation=interp)
        batch[i] = img.reshape(spec.height, spec.width, c)
    batch *= spec.scale
    batch += spec.offset
    if spec.layout == "NCHW":
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    return batch
