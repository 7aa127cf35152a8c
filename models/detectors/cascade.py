"""Two detectors on the same frames, one box per face: the thorough pass on still images.

A photo is looked at once and nothing follows its faces, so a second model pays there:
``emostream analyze`` and ``/v1/predict`` run YuNet (the first pass) and RetinaFace (the
second) on every still image and keep, per face, the first pass's box; a second-pass box is
added only where the first pass found nothing (``tiles.merge``: IoU over 0.3, or one box
mostly inside the other, is the same face). The two models miss different faces (YuNet
small and blurred ones, RetinaFace some profiles), and their union finds more than either
at the same false positives per image (docs/ARCHITECTURE.md, "Face detection"). Video
frames and live sessions do not take it: the detector runs on a schedule there and the
next run finds what one missed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from emostream.models.detectors import tiles
from emostream.models.detectors.base import Detection, DetectorConfigBase, FaceDetector

#: Two boxes are one face when their IoU exceeds this (as the backends' own NMS).
SAME_FACE_IOU = 0.3


class Cascade(FaceDetector):
    """``first`` then ``second`` on every frame; the first pass's box wins a face."""

    name = "cascade"

    def __init__(self, first: FaceDetector, second: FaceDetector) -> None:
        self.first, self.second = first, second

    @classmethod
    def from_config(cls, config: object, model_root: object) -> Cascade:
        raise TypeError("a Cascade is built from two detectors, not from a config")

    @property
    def ref(self) -> str:
        return f"{self.first.ref} + {self.second.ref}"

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        passes = (self.first.detect_batch(images), self.second.detect_batch(images))
        return [merged(a, b) for a, b in zip(*passes, strict=True)]

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]


def merged(first: list[Detection], second: list[Detection]) -> list[Detection]:
    """One frame's two passes as one box per face, the first pass's box where both found
    it, largest first."""
    both = first + second
    if not second or not both:
        return first
    xyxy = np.array([(x, y, x + w, y + h) for x, y, w, h in (d.box for d in both)], float)
    scores = np.array([d.score for d in both], float)
    rank = np.array([0] * len(first) + [1] * len(second), np.intp)
    keep = tiles.merge(xyxy, scores, rank=rank, iou_threshold=SAME_FACE_IOU)
    out = [both[i] for i in keep]
    out.sort(key=lambda d: d.box[2] * d.box[3], reverse=True)
    return out


class PhotoConfig(BaseModel):
    """``EMOSTREAM_PHOTO__*``: the second pass on still images (``emostream analyze`` and
    ``/v1/predict`` photos), taken when the detector's range is ``far``."""

    second: str = Field(
        default="retinaface",
        description="the second detector on still images (a backend with a range, run at "
        "far), or none",
    )
    score_threshold: float = Field(
        default=0.93,
        ge=0.0,
        le=1.0,
        description="the second pass's threshold, calibrated with the first's on the "
        "labelled boxes (bench detectors)",
    )


def second_pass(config: DetectorConfigBase, photo: PhotoConfig) -> DetectorConfigBase | None:
    """The second detector's config for still images under ``config``, or None: no second
    pass configured, or a range other than ``far`` (``/v1/predict?range=near``)."""
    from pydantic import TypeAdapter

    from emostream.models.detectors import DetectorConfig

    if photo.second == "none" or getattr(config, "range", None) != "far":
        return None
    fields = {"type": photo.second, "range": "far", "score_threshold": photo.score_threshold}
    for shared in ("far_pixels", "providers"):  # the same bound, on the same device
        if hasattr(config, shared):
            fields[shared] = getattr(config, shared)
    second: DetectorConfigBase = TypeAdapter(DetectorConfig).validate_python(fields)
    return second
