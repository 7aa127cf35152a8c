"""The broker's two roles: what ingest needs and what a worker needs (docs/ARCHITECTURE.md).

Real time beats completeness: a session keeps at most ``max_in_flight`` frames queued, a
newer one replaces the oldest one that has not started (``superseded``), and a job
whose deadline has passed when a worker takes it is dropped (``deadline``). Every drop is
counted with its reason, and the session is told (so it can count it too). Voice windows
are the exception to superseding: each one is a different stretch of speech, so they queue
up to ``voice_max_in_flight`` and have their own, longer ``voice_deadline_ms``.

The in-process broker plays both roles in one object; with Redis each role is its own class,
so an ingest node never carries worker code paths and the other way round.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from emostream.broker.broker_config import BrokerConfig
from emostream.modalities import spec
from emostream.pipeline.jobs import Job, Modality
from emostream.pipeline.outcomes import Outcome, SessionEvent
from emostream.supervise import Supervised


class UnknownSessionError(KeyError):
    """A submit or a results read for a session this broker has not opened (or closed)."""


class _Lifecycle(ABC):
    config: BrokerConfig

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def healthy(self) -> bool:
        """Whether the broker is reachable now (``/readyz``)."""
        return True

    @property
    def problem(self) -> str | None:
        """Why the broker cannot take jobs right now (``/readyz`` says it), or None."""
        return None

    @property
    def tasks(self) -> list[Supervised]:
        """Its supervised background tasks (``/readyz`` shows them)."""
        return []

    @property
    def details(self) -> dict[str, object]:
        """What ``/readyz`` adds about this broker's layout (empty: nothing to add)."""
        return {}


class IngestBroker(_Lifecycle):
    """The sessions' side: open, submit, read results, close."""

    @abstractmethod
    async def open_session(self, session: str, owner: bytes | None = None) -> None:
        """Make ``results(session)`` ready before the first submit. ``owner`` (the
        credential) lets a broker that admits sessions for a whole server hold the quota."""

    @abstractmethod
    async def close_session(self, session: str) -> None:
        """Drop the session's queued jobs (counted) and end its result stream."""

    @abstractmethod
    async def submit(self, job: Job) -> None:
        """Queue a job; may supersede an older queued job of the same session.

        Raises ``UnknownSessionError`` for a session that is not open.
        """

    @abstractmethod
    def results(self, session: str) -> AsyncIterator[SessionEvent]:
        """The session's outcomes (and broker notices), until the session is closed."""

    async def keep_record(self, session: str, record: bytes, ttl_s: float) -> None:
        """Share a small record of an ended session (its call summary) with every ingest
        node for ``ttl_s``; in-process there is only this node, which keeps its own."""

    async def recall_record(self, session: str) -> bytes | None:
        """The record another node kept for ``session``, if any."""
        return None


class WorkerBroker(_Lifecycle):
    """The workers' side: take batches, publish their outcomes, see the backlog."""

    #: Whether a taken job's payload stays valid after its outcome is published (a shadow
    #: candidate scores after that); the local broker's shared-memory slots do not.
    payloads_outlive_publish: bool = True

    @abstractmethod
    async def take(self, modality: Modality, max_items: int, max_wait_s: float) -> list[Job]:
        """Up to ``max_items`` live jobs, waiting at most ``max_wait_s`` after the first."""

    @abstractmethod
    async def publish(self, outcomes: list[Outcome]) -> None:
        """Send outcomes to their sessions and settle their jobs."""

    @abstractmethod
    async def depth(self, modality: Modality) -> int:
        """Jobs queued and not yet taken."""


def stamp(job: Job, config: BrokerConfig) -> Job:
    """Give a job its deadline (unless it has one) and its time of queueing."""
    job.enqueued = time.monotonic()
    if math.isinf(job.deadline):
        job.deadline = job.created + spec(job.modality).deadline_s(config)
    return job
