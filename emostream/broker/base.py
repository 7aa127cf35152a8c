"""Jobs, results and the Broker interface, shared by every implementation.

Real time beats completeness: a session keeps at most ``max_in_flight`` jobs per modality
queued, a newer job replaces the oldest one that has not started (``superseded``), and a job
whose deadline has passed when a worker takes it is dropped (``deadline``). Every drop is
counted with its reason, and the session is told (so it can count it too).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np

from emostream import metrics

Modality = Literal["face", "voice"]


class DropReason(StrEnum):
    superseded = "superseded"  # a newer frame of the same session replaced it
    deadline = "deadline"  # too old when a worker got to it
    session_closed = "session_closed"  # the session ended before it ran
    error = "error"  # the worker failed on it (bad payload); the session lives on
    overload = "overload"  # the broker refused it (queue full across sessions)
    malformed = "malformed"  # a job on the stream that no worker can read (acked, not run)
    unavailable = "unavailable"  # the broker (Redis) was unreachable when it was submitted
    lost = "lost"  # no worker answered long after its deadline (stream trimmed or wiped)


@dataclass
class Job:
    """One unit of inference work: a decoded, downscaled frame or an audio window."""

    session: str
    modality: Modality
    seq: int
    pts: float
    payload: np.ndarray
    created: float = field(default_factory=time.monotonic)  # when decode started
    deadline: float = 0.0  # monotonic; 0 = created + the broker's default
    meta: dict[str, float] = field(default_factory=dict)  # e.g. scale back to source pixels
    enqueued: float = 0.0
    reply_to: str = ""  # where its result goes (the Redis broker: the ingest node's stream)
    token: str = ""  # the broker's handle for acknowledging it (a stream entry id)

    @property
    def key(self) -> tuple[str, int]:
        return self.session, self.seq


@dataclass
class Result:
    """What a worker returns for one job (raw: tracking and smoothing are per session)."""

    session: str
    modality: Modality
    seq: int
    pts: float
    created: float
    meta: dict[str, float]
    model: str = ""
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    scores: np.ndarray | None = None  # (faces, classes) or (classes,) for voice
    classes: list[str] = field(default_factory=list)
    dropped: DropReason | None = None
    error: str | None = None
    queue_s: float = 0.0
    inference_s: float = 0.0
    reply_to: str = ""
    token: str = ""

    @classmethod
    def of(cls, job: Job, **fields: object) -> Result:
        """A result for ``job``: its identity, timing and routing copied over."""
        return cls(
            job.session,
            job.modality,
            job.seq,
            job.pts,
            job.created,
            job.meta,
            reply_to=job.reply_to,
            token=job.token,
            **fields,  # type: ignore[arg-type]
        )


class Broker(ABC):
    """Move jobs from sessions to workers and results back, with backpressure."""

    def __init__(self, max_in_flight: int = 2, deadline_s: float = 0.25) -> None:
        self.max_in_flight = max_in_flight
        self.deadline_s = deadline_s

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def open_session(self, session: str) -> None:
        """Make ``results(session)`` ready before the first submit."""

    @abstractmethod
    async def close_session(self, session: str) -> None:
        """Drop the session's queued jobs (counted) and end its result stream."""

    @abstractmethod
    async def submit(self, job: Job) -> None:
        """Queue a job; may supersede an older queued job of the same session."""

    @abstractmethod
    def results(self, session: str) -> AsyncIterator[Result]:
        """The session's results, in completion order, until the session is closed."""

    @abstractmethod
    async def take(self, modality: Modality, max_items: int, max_wait_s: float) -> list[Job]:
        """Up to ``max_items`` live jobs, waiting at most ``max_wait_s`` after the first."""

    @abstractmethod
    async def publish(self, results: list[Result]) -> None: ...

    @abstractmethod
    async def depth(self, modality: Modality) -> int:
        """Jobs queued and not yet taken."""

    async def healthy(self) -> bool:
        return True

    @property
    def problem(self) -> str | None:
        """Why the broker cannot take jobs right now (``/readyz`` says it), or None."""
        return None

    def _stamp(self, job: Job) -> Job:
        if not job.deadline:
            job.deadline = job.created + self.deadline_s
        job.enqueued = time.monotonic()
        return job


def count_drop(job: Job, reason: DropReason) -> Result:
    """Count a dropped job and make the result that tells its session."""
    metrics.FRAMES_DROPPED.labels(job.modality, reason.value).inc()
    return Result.of(job, dropped=reason)
