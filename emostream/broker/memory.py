"""The embedded broker: asyncio queues in one process, the worker beside the sessions.

It plays both roles (``IngestBroker`` and ``WorkerBroker``) in one object. Fairness:
``take`` collects round-robin, one job per session per pass, so one busy session cannot
fill a batch while others wait. Backpressure: at most ``max_in_flight`` queued jobs per
session and modality; a newer job supersedes the oldest queued one.

``take`` stops waiting for more early once its batch holds a job from every open session
that sends that modality: each of them has just been served, so nothing can arrive before
one of their next frames (66 ms away at 15 fps), and waiting out ``max_wait_s`` would only
add latency. A lone session thus never waits; a session counts as sending a modality from
its first job of it until it closes (a video-only session does not hold up voice batches).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator

from emostream import metrics
from emostream.broker.base import IngestBroker, UnknownSessionError, WorkerBroker, stamp
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.session_queues import SessionQueues
from emostream.modalities import spec
from emostream.pipeline.jobs import DropReason, Job, Modality
from emostream.pipeline.outcomes import Outcome, SessionEvent, drop


class MemoryBroker(IngestBroker, WorkerBroker):
    def __init__(
        self,
        config: BrokerConfig | None = None,
        results: SessionQueues | None = None,
        count_in: bool = True,
    ) -> None:
        """``results``: where outcomes go; the sessions' own queues here, the owning ingest
        process with the local multi-process broker (``local/hub.py``), whose ingest
        processes count frames in themselves (``count_in`` False)."""
        self._count_in = count_in
        self.config = config or BrokerConfig()
        self._pending: defaultdict[Modality, OrderedDict[str, deque[Job]]] = defaultdict(
            OrderedDict
        )
        self._results = results if results is not None else SessionQueues()
        self._wake: dict[Modality, asyncio.Event] = {}
        self._senders: defaultdict[Modality, set[str]] = defaultdict(set)

    def _event(self, modality: Modality) -> asyncio.Event:
        ev = self._wake.get(modality)
        if ev is None:
            ev = self._wake[modality] = asyncio.Event()
        return ev

    async def start(self) -> None:
        metrics.BROKER_UP.set(1)  # in-process: reachable as long as the process runs

    async def close(self) -> None:
        for session in self._results.sessions():
            await self.close_session(session)

    # -- ingest ---------------------------------------------------------------------------
    async def open_session(self, session: str, owner: bytes | None = None) -> None:
        self._results.open(session)

    async def close_session(self, session: str) -> None:
        self.close_now(session)

    def close_now(self, session: str) -> None:
        """``close_session`` without a wait (the local hub calls it in message order)."""
        for modality, queues in self._pending.items():
            for job in queues.pop(session, deque()):
                self._results.discard(session, drop(job, DropReason.session_closed))
            metrics.QUEUE_DEPTH.labels(modality).set(self.queued(modality))
            self._senders[modality].discard(session)
        self._results.close(session)

    async def submit(self, job: Job) -> None:
        self.submit_now(job)

    def submit_now(self, job: Job) -> None:
        """``submit`` without a wait (the local hub calls it in message order)."""
        if job.session not in self._results:
            raise UnknownSessionError(job.session)
        if self._count_in:
            metrics.FRAMES_IN.labels(job.modality).inc()
        self._senders[job.modality].add(job.session)
        queue = self._pending[job.modality].setdefault(job.session, deque())
        while len(queue) >= spec(job.modality).in_flight(self.config):
            self._results.put(job.session, drop(queue.popleft(), DropReason.superseded))
        queue.append(stamp(job, self.config))
        metrics.QUEUE_DEPTH.labels(job.modality).set(self.queued(job.modality))
        self._event(job.modality).set()

    def results(self, session: str) -> AsyncIterator[SessionEvent]:
        return self._results.read(session)

    # -- worker ---------------------------------------------------------------------------
    def _collect(self, modality: Modality, room: int, out: list[Job]) -> None:
        """Round-robin over sessions, dropping jobs that are already past their deadline."""
        queues = self._pending[modality]
        now = time.monotonic()
        progressed = True
        while room > 0 and progressed:
            progressed = False
            for session in list(queues):
                q = queues[session]
                while q and q[0].deadline < now:
                    self._results.put(session, drop(q.popleft(), DropReason.deadline))
                if q and room > 0:
                    out.append(q.popleft())
                    room -= 1
                    progressed = True
                    queues.move_to_end(session)  # next pass starts with another session
                if not q:
                    queues.pop(session, None)

    async def take(self, modality: Modality, max_items: int, max_wait_s: float) -> list[Job]:
        event = self._event(modality)
        out: list[Job] = []
        first: float | None = None
        while True:
            self._collect(modality, max_items - len(out), out)
            if out and first is None:
                first = time.monotonic()
            if len(out) >= max_items or (
                first is not None
                and (time.monotonic() - first >= max_wait_s or self._complete(modality, out))
            ):
                break
            event.clear()
            timeout = None if first is None else max(0.0, max_wait_s - (time.monotonic() - first))
            try:
                async with asyncio.timeout(timeout):  # not wait_for (py3.11 cancel race)
                    await event.wait()
            except TimeoutError:
                self._collect(modality, max_items - len(out), out)
                break
        metrics.QUEUE_DEPTH.labels(modality).set(self.queued(modality))
        return out

    def _complete(self, modality: Modality, batch: list[Job]) -> bool:
        """Whether ``batch`` holds a job from every session that sends ``modality``."""
        return self._senders[modality] <= {j.session for j in batch}

    async def publish(self, outcomes: list[Outcome]) -> None:
        self.publish_now(outcomes)

    def publish_now(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:  # a session that ended meanwhile simply gets nothing
            self._results.put(outcome.job.session, outcome)

    async def depth(self, modality: Modality) -> int:
        return self.queued(modality)

    def queued(self, modality: Modality) -> int:
        """Jobs of ``modality`` queued and not yet taken."""
        return sum(len(q) for q in self._pending[modality].values())
