"""Frames in, faces with emotion scores out: detection, cropping, batched classification.

The classifier call is batched over every face of every frame handed in at once, which is
what the real-time worker relies on to serve many sessions with one ONNX Runtime call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emostream.models.detectors.base import Box, FaceDetector
from emostream.models.preprocess import crop
from emostream.models.runner import Classifier
from emostream.models.tracker import IouTracker
from emostream.schema import Face


@dataclass
class FrameFaces:
    """Raw per-frame result, before track ids and message wrapping."""

    boxes: list[Box]
    scores: np.ndarray  # (faces, classes)


class FaceAnalyzer:
    def __init__(self, classifier: Classifier, detector: FaceDetector) -> None:
        self.classifier = classifier
        self.detector = detector
        self.classes = classifier.card.classes

    @property
    def model_ref(self) -> str:
        return self.classifier.card.ref

    def detect(self, frame: np.ndarray) -> list[Box]:
        return [d.box for d in self.detector.detect(frame)]

    def classify(
        self, frames: Sequence[np.ndarray], boxes: Sequence[list[Box]]
    ) -> list[FrameFaces]:
        """Score the given boxes of each frame in one batched model call."""
        margin = self.classifier.spec.crop_margin
        crops = [crop(f, b, margin) for f, bs in zip(frames, boxes, strict=True) for b in bs]
        scores = self.classifier.predict(crops)
        out, i = [], 0
        for bs in boxes:
            out.append(FrameFaces(list(bs), scores[i : i + len(bs)]))
            i += len(bs)
        return out

    def analyze(self, frames: Sequence[np.ndarray], *, detect: bool = True) -> list[FrameFaces]:
        """Detect (or take each whole frame as one aligned face) and classify."""
        if detect:
            boxes = [self.detect(f) for f in frames]
        else:
            boxes = [[(0, 0, f.shape[1], f.shape[0])] for f in frames]
        return self.classify(frames, boxes)

    def to_faces(self, result: FrameFaces, tracker: IouTracker | None = None) -> list[Face]:
        """Schema faces; with a tracker, stable ids and (optionally) smoothed scores."""
        if tracker is not None:
            ids, scores = tracker.update(result.boxes, result.scores)
            assert scores is not None
        else:
            ids, scores = list(range(1, len(result.boxes) + 1)), result.scores
        faces = []
        for box, tid, row in zip(result.boxes, ids, scores, strict=True):
            k = int(np.argmax(row))
            faces.append(
                Face(
                    track_id=tid,
                    box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
                    scores={c: round(float(p), 5) for c, p in zip(self.classes, row, strict=True)},
                    label=self.classes[k],
                    confidence=round(float(row[k]), 5),
                )
            )
        return faces
