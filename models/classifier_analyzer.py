"""The part every model-backed analyzer shares: one classifier, its card and its tally.

``FaceAnalyzer`` and ``VoiceAnalyzer`` differ in what they do before the classifier (find
faces, check windows); what the ``Analyzer`` protocol asks besides ``run`` (the model that
scores, the provider it runs on, the tally of its predictions) is here, once.
"""

from __future__ import annotations

from typing import ClassVar

from emostream.models.drift import DriftConfig
from emostream.models.runner import Classifier
from emostream.models.tally import ModelTally
from emostream.pipeline.jobs import Modality


class ClassifierAnalyzer:
    modality: ClassVar[Modality]

    def __init__(self, classifier: Classifier, drift: DriftConfig | None = None) -> None:
        self.classifier = classifier
        self.card = classifier.card
        self.classes = tuple(self.card.classes)
        self._tally = ModelTally(self.card, self.provider, drift)

    @property
    def model(self) -> str:
        """``name/version`` of the model that scores."""
        return self.card.ref

    @property
    def provider(self) -> str:
        return self.classifier.runner.providers[0]

    @property
    def tally(self) -> ModelTally:
        return self._tally
