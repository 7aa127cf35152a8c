"""Shadow evaluation: a candidate version scores a sample of production's faces, unseen.

Before a version is promoted one wants to know how it behaves on live traffic, not only on
its validation set. While aliases.json names a ``shadow``, each process that runs a face
worker scores ``fraction`` of the faces each production batch found, with the same boxes,
after that batch's outcomes are published, in the inference thread: clients never wait for
it and never see it. What it gives is counted per candidate: faces compared, how many got
production's top class, and the candidate's own class mix.

Sampling is a deterministic credit counter (every face adds ``fraction``; a face is scored
each time the credit reaches 1), so the share is exact over any stretch of traffic and a
test can rely on it; faces are not chosen by content.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from emostream import metrics
from emostream.models.face import payload_box
from emostream.models.preprocess import face_crop
from emostream.models.runner import Classifier
from emostream.pipeline.jobs import Job
from emostream.pipeline.outcomes import FaceScores, Outcome, Scored


class Shadow:
    """One candidate classifier and its share of faces."""

    def __init__(self, classifier: Classifier, fraction: float) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"shadow fraction must be in (0, 1], got {fraction}")
        self.classifier = classifier
        self.fraction = fraction
        card = classifier.card
        self.model = card.ref
        self._labels = (card.name, card.version)
        self._credit = 0.0
        self._lock = threading.Lock()
        metrics.SHADOW_FACES.labels(*self._labels)
        metrics.SHADOW_AGREEMENT.labels(*self._labels)
        for label in card.classes:
            metrics.SHADOW_PREDICTIONS.labels(*self._labels, label)

    def _take(self) -> bool:
        self._credit += self.fraction
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False

    def compare(self, jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> int:
        """Score the sampled faces of this batch's scored frames; returns how many."""
        margin = self.classifier.spec.crop_margin
        crops: list[np.ndarray] = []
        production: list[str] = []
        with self._lock:
            for job, outcome in zip(jobs, outcomes, strict=True):
                if not isinstance(outcome, Scored) or not isinstance(outcome.result, FaceScores):
                    continue
                faces = outcome.result
                for box, row in zip(faces.boxes, faces.scores, strict=True):
                    if self._take():
                        source = payload_box(box, job.frame.scale)
                        crops.append(face_crop(job.payload, source, margin))
                        production.append(faces.classes[int(np.argmax(row))])
        if not crops:
            return 0
        classes = self.classifier.card.classes
        top = [classes[k] for k in np.argmax(self.classifier.predict(crops), axis=1).tolist()]
        agree = sum(1 for a, b in zip(top, production, strict=True) if a == b)  # by class name
        metrics.SHADOW_FACES.labels(*self._labels).inc(len(top))
        metrics.SHADOW_AGREEMENT.labels(*self._labels).inc(agree)
        for label in top:
            metrics.SHADOW_PREDICTIONS.labels(*self._labels, label).inc()
        return len(top)
