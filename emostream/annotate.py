"""Draw faces (box, label, confidence, track id) onto frames for ``--annotate``.

Labels are placed by ``label_layout`` (inside the image, over no other label), at a font
scale set by the image's size; a label moved away from its box gets a thin leader line.
"""

from __future__ import annotations

import cv2
import numpy as np

from emostream.label_layout import Rect, font_scale, overlaps, place_labels
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
FONT = cv2.FONT_HERSHEY_SIMPLEX
PAD = 3  # pixels of background around the text


#: an unsure face's box and label: no class colour for a guess
UNSURE_COLOUR = (160, 160, 160)


def label_text(face: Face) -> str:
    return f"#{face.track_id} {face.text()}"


def colour_of(face: Face) -> tuple[int, int, int]:
    return UNSURE_COLOUR if face.unsure else COLOURS.get(face.label, (0, 255, 0))


def label_size(text: str, scale: float, thick: int) -> tuple[int, int]:
    """The label's background rectangle: the text, its descender and padding."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    return tw + 2 * PAD, th + base + 2 * PAD


def _touches(label: Rect, box: Rect) -> bool:
    """The label sits against (or on) its box: no leader line needed."""
    x, y, w, h = box
    return overlaps(label, (x - 2, y - 2, w + 4, h + 4))


def draw_faces(frame: np.ndarray, faces: list[Face]) -> np.ndarray:
    out = frame.copy()
    height, width = out.shape[:2]
    scale = font_scale(width, height)
    thick = max(1, round(scale * 1.6))
    box_thick = max(1, round(min(width, height) / 400))
    texts = [label_text(f) for f in faces]
    boxes: list[Rect] = [f.box for f in faces]
    labels = place_labels(boxes, [label_size(t, scale, thick) for t in texts], width, height)
    for f, box, (lx, ly, lw, lh) in zip(faces, boxes, labels, strict=True):
        x, y, w, h = box
        colour = colour_of(f)
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, box_thick)
        if not _touches((lx, ly, lw, lh), box):
            cv2.line(out, (lx + lw // 2, ly + lh // 2), (x + w // 2, y), colour, 1, cv2.LINE_AA)
    for f, text, (lx, ly, lw, lh) in zip(faces, texts, labels, strict=True):
        colour = colour_of(f)
        cv2.rectangle(out, (lx, ly), (lx + lw - 1, ly + lh - 1), colour, -1)
        (_, th), _ = cv2.getTextSize(text, FONT, scale, thick)
        origin = (lx + PAD, ly + PAD + th)
        cv2.putText(out, text, origin, FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out
