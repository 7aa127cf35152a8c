"""MediaPipe's ImageToTensor (keep_aspect_ratio, BORDER_ZERO) written straight into a batch.

``letterbox_into`` fills one slot of a preallocated (N, 3, S, S) float32 tensor from a frame
or a region of it (a numpy view: no copy of the frame), so that a batch of frames and tiles
costs one resize per slot and no intermediate canvas.
"""

from __future__ import annotations

import cv2
import numpy as np

_SCALE = np.float32(2.0 / 255.0)
_ONE = np.float32(1.0)


def letterbox_into(image: np.ndarray, out: np.ndarray) -> tuple[float, int, int]:
    """Letterbox a BGR (or gray) image into ``out``, a (3, S, S) float32 slot, as RGB in
    [-1, 1] with black (-1) borders; returns ``(scale, x_offset, y_offset)`` so that
    ``source = (input - offset) / scale``."""
    size = out.shape[-1]
    h, w = image.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    # Resize first, then convert colour: channel order commutes with resizing, and the
    # conversion then touches S px instead of the whole frame (the worker's hot path).
    small = cv2.resize(image, (nw, nh), interpolation=interp)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    out.fill(-1.0)
    for c in range(3):  # RGB from BGR (or the one gray channel thrice)
        src = small if small.ndim == 2 else small[..., 2 - c]
        dst = out[c, oy : oy + nh, ox : ox + nw]
        np.multiply(src, _SCALE, out=dst, casting="unsafe")
        dst -= _ONE
    return scale, ox, oy


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """One image as a (1, 3, size, size) tensor, and ``(scale, x_offset, y_offset)``."""
    tensor = np.empty((1, 3, size, size), np.float32)
    scale, ox, oy = letterbox_into(image, tensor[0])
    return tensor, scale, ox, oy
