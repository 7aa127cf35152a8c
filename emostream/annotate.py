"""Draw faces (box, label, confidence, track id) onto frames for ``--annotate``."""

from __future__ import annotations

import cv2
import numpy as np

from emostream.schema import Face

#: One colour per class (BGR), so a label change is visible at a glance.
COLOURS = {
    "angry": (40, 40, 220),
    "disgust": (40, 140, 40),
    "fear": (160, 60, 160),
    "happy": (40, 200, 240),
    "sad": (200, 120, 40),
    "surprise": (240, 200, 40),
    "neutral": (200, 200, 200),
}


def draw_faces(frame: np.ndarray, faces: list[Face]) -> np.ndarray:
    out = frame.copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    for f in faces:
        x, y, w, h = f.box
        colour = COLOURS.get(f.label, (0, 255, 0))
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick)
        text = f"#{f.track_id} {f.label} {f.confidence:.2f}"
        scale = 0.4 * thick + 0.1
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - 6 > 0 else y + h + th + 4
        cv2.rectangle(out, (x, ty - th - 3), (x + tw + 4, ty + base - 1), colour, -1)
        cv2.putText(
            out,
            text,
            (x + 2, ty - 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            thick,
            cv2.LINE_AA,
        )
    return out
