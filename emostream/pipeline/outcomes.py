"""What a job comes back as: scored, dropped or failed; and what else a session may hear.

Each meaning has its own type (no flag fields on one catch-all result), generic over what
a modality scores, so a voice window's scores sit beside a frame's faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from emostream import metrics
from emostream.pipeline.jobs import Box, DropReason, Job


class Scores(Protocol):
    """Per-class probabilities, one row per face (or one row per voice window)."""

    @property
    def scores(self) -> np.ndarray: ...

    @property
    def classes(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class FaceScores:
    """A frame's faces: boxes in source-frame pixels and their (faces, classes) scores."""

    boxes: list[Box]
    scores: np.ndarray
    classes: tuple[str, ...]


@dataclass(frozen=True)
class VoiceScores:
    """One speech window's (1, classes) scores."""

    scores: np.ndarray
    classes: tuple[str, ...]


S = TypeVar("S", bound=Scores, covariant=True)


@dataclass(frozen=True)
class Scored(Generic[S]):
    job: Job  # the header: identity, timing, routing
    model: str  # ``name/version`` that produced the scores
    result: S


@dataclass(frozen=True)
class Dropped:
    job: Job
    reason: DropReason


@dataclass(frozen=True)
class Failed:
    """The analyzer could not use this job (counted as ``error``); its session lives on."""

    job: Job
    error: str


@dataclass(frozen=True)
class BrokerNotice:
    """Not about one job: the broker is unreachable (``code`` for the error message)."""

    detail: str
    code: str = "broker_unavailable"


Outcome = Scored[Scores] | Dropped | Failed
SessionEvent = Outcome | BrokerNotice


def drop(job: Job, reason: DropReason) -> Dropped:
    """Count a dropped job and make the outcome that tells its session."""
    metrics.FRAMES_DROPPED.labels(job.modality, reason.value).inc()
    return Dropped(job.header(), reason)


def fail(job: Job, error: str) -> Failed:
    """Count a job the analyzer could not run (reason ``error``) and say why."""
    metrics.FRAMES_DROPPED.labels(job.modality, DropReason.error.value).inc()
    return Failed(job.header(), error)
