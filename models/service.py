"""The face service a process runs: model from the repository, a detector per thread.

Both the HTTP API and offline analysis build one of these from ``Settings``; metrics for
every processed frame are recorded here, so every entry point counts the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from emostream import metrics
from emostream.models.detectors import create_detector
from emostream.models.detectors.base import Detection, DetectorConfigBase, FaceDetector
from emostream.models.drift import DriftConfig, DriftMonitor
from emostream.models.face import FaceAnalyzer, FrameFaces
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, RunnerConfig

if TYPE_CHECKING:
    from emostream.settings import Settings


class FaceModelConfig(BaseModel):
    """``EMOSTREAM_FACE__*``: which face-emotion model the process serves."""

    model: str = Field(default="face-emotion", description="model name in the repository")
    alias: str = Field(default="production", description="the alias (or version) to serve")


class _ThreadLocalDetector:
    """OpenCV cascades are not safe to share between threads: give each thread its own."""

    def __init__(self, factory: Callable[[], FaceDetector]) -> None:
        self._factory = factory
        self._local = threading.local()
        first = factory()
        self.name, self.ref = first.name, first.ref

    def detect(self, image: np.ndarray) -> list[Detection]:
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = self._factory()
        return det.detect(image)


class FaceService:
    def __init__(
        self,
        repo: ModelRepository,
        name: str,
        alias: str,
        runner: RunnerConfig,
        detector: DetectorConfigBase,
        drift: DriftConfig | None = None,
    ) -> None:
        self.classifier = Classifier.from_repository(repo, name, alias, runner)
        self.analyzer = FaceAnalyzer(
            self.classifier,
            _ThreadLocalDetector(lambda: create_detector(detector, repo.root)),  # type: ignore[arg-type]
        )
        card = self.classifier.card
        self.card = card
        metrics.MODEL_INFO.labels(
            card.name, card.version, card.modality, self.classifier.runner.providers[0]
        ).set(1)
        self.drift = DriftMonitor(
            card.name,
            card.version,
            card.modality,
            card.classes,
            card.reference_distribution,
            drift,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceService:
        """The production service a process runs: model, runner, detector, drift window."""
        return cls(
            ModelRepository(settings.model_root),
            settings.face.model,
            settings.face.alias,
            settings.runner,
            settings.detector,
            settings.drift,
        )

    @property
    def detector_ref(self) -> str:
        """``face-detector/<version>`` for a repository model, else the backend name."""
        return self.analyzer.detector.ref

    @property
    def provider(self) -> str:
        return self.classifier.runner.providers[0]

    def process(self, frame: np.ndarray, *, detect: bool = True) -> FrameFaces:
        """Detect and classify one frame, recording stage latency and predictions."""
        t0 = time.perf_counter()
        result = self.analyzer.analyze([frame], detect=detect)[0]
        metrics.STAGE_LATENCY.labels("inference", "face").observe(time.perf_counter() - t0)
        metrics.FRAMES_PROCESSED.labels("face").inc()
        if len(result.boxes):
            metrics.BATCH_SIZE.labels("face").observe(len(result.boxes))
        self.count_predictions(result.scores)
        return result

    def count_predictions(self, scores: np.ndarray) -> None:
        """Top class per face into ``emostream_predictions_total`` and the drift window."""
        if not len(scores):
            return
        card = self.card
        top = np.argmax(scores, axis=1).tolist()
        for k in top:
            metrics.PREDICTIONS.labels(card.name, card.version, "face", card.classes[k]).inc()
        self.drift.observe(top)
