"""One served model's counters: predictions by class, its drift window, and its info series.

Kept per model version, so a refreshed model is counted under its own version and its
drift is measured against its own card's reference distribution from its first batch.
When a process stops serving a version, ``retire`` takes its info and drift series away
(an old version's drift would otherwise keep alerting) and marks it not serving; its
prediction counters stay, as counters do.
"""

from __future__ import annotations

import numpy as np

from emostream import metrics
from emostream.models.card import ModelCard
from emostream.models.drift import DriftConfig, DriftMonitor
from emostream.pipeline.outcomes import Scored, Scores


class ModelTally:
    def __init__(self, card: ModelCard, provider: str, drift: DriftConfig | None = None) -> None:
        self.card = card
        self._info = (card.name, card.version, card.modality, provider)
        metrics.MODEL_INFO.labels(*self._info).set(1)
        metrics.MODEL_SERVING.labels(card.name, card.version, card.modality).set(1)
        self.drift = DriftMonitor(
            card.name,
            card.version,
            card.modality,
            card.classes,
            card.reference_distribution,
            drift,
        )

    def observe(self, scored: Scored[Scores]) -> None:
        """Top class of each scored row into ``emostream_predictions_total`` and the window."""
        scores = scored.result.scores
        if not len(scores):
            return
        card = self.card
        top = np.argmax(scores, axis=1).tolist()
        for k in top:
            metrics.PREDICTIONS.labels(
                card.name, card.version, card.modality, card.classes[k]
            ).inc()
        self.drift.observe(top)

    def retire(self) -> None:
        """This version no longer serves in this process."""
        card = self.card
        metrics.MODEL_SERVING.labels(card.name, card.version, card.modality).set(0)
        metrics.remove(metrics.MODEL_INFO, *self._info)
        self.drift.retire()
