"""The ingest side of the local broker: sessions' jobs to the hub, outcomes back.

A payload is copied once into this process's arena and the job travels as its header with
the slot's ``Ref`` in ``job.token``; the slot is freed when the job's outcome comes back,
whatever it is (scored, superseded, past its deadline, failed, or ``worker_died``), so a
slot is never reused while an inference process may still read it. With no free slot the
job is dropped as ``overload`` (counted) rather than queued without bound.

Admission goes through the hub, which holds ``max_sessions`` and the per-owner quota for
the whole server; so does the directory of which process owns a session (``owner``), and
ended calls' records (any process answers a summary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from emostream import metrics
from emostream.broker.base import IngestBroker, UnknownSessionError
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.outage import NO_WORKER, Outage
from emostream.broker.session_queues import SessionQueues
from emostream.local.arena import Arena, ArenaFullError, Ref
from emostream.local.channel import Channel, ChannelClosedError
from emostream.pipeline.jobs import DropReason, Job
from emostream.pipeline.outcomes import Outcome, SessionEvent, drop
from emostream.stream.session_manager import SessionExistsError, SessionLimitError
from emostream.supervise import Supervised, supervise

log = logging.getLogger("emostream.local.ingest")
NO_INFERENCE = "no inference process is running; results resume when one is back"



class LocalIngest(IngestBroker):
    def __init__(
        self, config: BrokerConfig, control: socket.socket, arena: Arena, processes: int = 1
    ) -> None:
        self.config = config
        self.processes = processes
        self._control = control
        self.channel: Channel = Channel.unopened()
        self.arena = arena
        self._results = SessionQueues()
        self._outage = Outage(self._results)  # no inference process alive: each told once
        self.workers = -1  # inference processes ready, as the hub last said (-1: not yet)
        self._reader: Supervised | None = None

    @property
    def problem(self) -> str | None:
        if self.channel.closed:
            return "the local broker (the serve parent) is gone"
        if self.workers == 0:
            return "no inference process is running (one is being started)"
        return None

    @property
    def details(self) -> dict[str, object]:
        """The answering process and what the hub last said, for ``/readyz``."""
        return {
            "processes": {
                "ingest": self.processes,
                "this": {"index": self.arena.index, "pid": os.getpid()},
                "inference_ready": max(self.workers, 0),
            }
        }

    async def healthy(self) -> bool:
        return self.problem is None

    @property
    def tasks(self) -> list[Supervised]:
        return [] if self._reader is None else [self._reader]

    async def start(self) -> None:
        """Open the channel to the hub and read it in a supervised task; the channel's
        end means the parent is gone (this process is then killed with it)."""
        self.channel = await Channel.open(self._control)

        async def read() -> None:
            await self.channel.serve(self.handle)
            await asyncio.sleep(3600)  # closed for good: stay down, do not spin

        self._reader = supervise("local-hub", read)
        metrics.BROKER_UP.set(1)

    async def close(self) -> None:
        for session in self._results.sessions():
            await self.close_session(session)

    def handle(self, kind: str, body: Any) -> None:
        """A message from the hub (``Channel.serve`` calls this)."""
        if kind == "outcome":
            self._outcome(body)
        elif kind == "workers":
            self._workers(int(body))
        else:
            log.warning("unknown message %r from the hub", kind)

    def _outcome(self, event: Outcome) -> None:
        try:
            self.arena.free(Ref.parse(event.job.token).slot)
        except ValueError:
            log.warning("outcome of %s without its slot", event.job.key)
        self._results.put(event.job.session, event)

    def _workers(self, count: int) -> None:
        self.workers = count
        if count == 0:
            self._outage.begin(NO_WORKER, NO_INFERENCE)
        else:
            self._outage.end()

    async def open_session(self, session: str, owner: bytes | None = None) -> None:
        refused = await self.channel.call("open", (session, owner))
        if refused is not None:
            code, detail = refused
            raise (SessionExistsError if code == "exists" else SessionLimitError)(detail)
        self._results.open(session)
        self._outage.on_open(session)

    async def close_session(self, session: str) -> None:
        self._results.close(session)
        with contextlib.suppress(ChannelClosedError):
            self.channel.send("close", session)

    async def submit(self, job: Job) -> None:
        if job.session not in self._results:
            raise UnknownSessionError(job.session)
        metrics.FRAMES_IN.labels(job.modality).inc()
        try:
            ref = self.arena.put(job.payload)
        except ArenaFullError as exc:
            metrics.LOCAL_ARENA_FULL.labels(job.modality).inc()
            log.debug("%s", exc)
            self._results.put(job.session, drop(job, DropReason.overload))
            return
        header = job.header()
        header.token = ref.token
        try:
            self.channel.send("job", header)
        except ChannelClosedError:
            self.arena.free(ref.slot)
            self._results.put(job.session, drop(job, DropReason.unavailable))

    def results(self, session: str) -> AsyncIterator[SessionEvent]:
        return self._results.read(session)

    async def keep_record(self, session: str, record: bytes, ttl_s: float) -> None:
        if ttl_s > 0 and not self.channel.closed:
            self.channel.send("keep", (session, record, ttl_s))

    async def recall_record(self, session: str) -> bytes | None:
        try:
            found = await self.channel.call("recall", session)
        except ChannelClosedError:
            return None
        return found if isinstance(found, bytes) else None

    async def owner(self, session: str) -> int | None:
        """Which ingest process holds ``session`` (None: nobody, or the hub is gone)."""
        try:
            found = await self.channel.call("owner", session)
        except ChannelClosedError:
            return None
        return found if isinstance(found, int) else None
