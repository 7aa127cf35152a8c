"""The local broker, in the parent: the embedded broker's real-time rules across processes.

Ingest processes send job headers (the payload stays in their arena; ``job.token`` holds
its ``Ref``), inference processes ask for batches and send outcomes back, and each outcome
goes to the ingest process that owns the session. The queueing itself is ``MemoryBroker``
unchanged (round-robin fairness, a newer frame supersedes, deadlines, every drop counted
by reason); ``Forwarder`` stands where its per-session result queues were.

The hub also holds what must be true for the server as a whole: which ingest owns which
session (so any process can route a request to it), ``max_sessions`` and the per-owner
quota, and the ended calls' records. It knows which jobs each inference process holds, so
when one dies those jobs are answered ``worker_died``, never lost silently; when none is
alive every ingest hears it (``no_worker``) and readiness says so.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from emostream import metrics
from emostream.broker.base import UnknownSessionError
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.memory import MemoryBroker
from emostream.broker.session_queues import SessionQueues
from emostream.local.channel import Channel, ChannelClosedError
from emostream.pipeline.jobs import DropReason, Job
from emostream.pipeline.outcomes import Dropped, Outcome, SessionEvent, drop
from emostream.stream.server_config import SessionConfig

log = logging.getLogger("emostream.local.hub")


class Forwarder(SessionQueues):
    """The sessions' result queues, replaced by their owners' channels."""

    def __init__(self) -> None:
        super().__init__()
        self.owner: dict[str, int] = {}
        self.ingests: dict[int, Channel] = {}

    def __contains__(self, session: object) -> bool:
        return session in self.owner

    def sessions(self) -> list[str]:
        return list(self.owner)

    def open(self, session: str) -> None:
        raise NotImplementedError("the hub opens sessions with their owner (Hub.open)")

    def close(self, session: str) -> None:
        self.owner.pop(session, None)

    def put(self, session: str, event: SessionEvent) -> bool:
        index = self.owner.get(session)
        return index is not None and self._send(index, event)

    def discard(self, session: str, dropped: Dropped) -> None:
        index = self.owner.get(session)
        if index is not None:
            self._send(index, dropped)  # its slot is freed; the session has gone

    def tell_all(self, event: SessionEvent) -> None:
        for index in self.ingests:
            self._send(index, event)

    def _send(self, index: int, event: SessionEvent) -> bool:
        channel = self.ingests.get(index)
        if channel is None:
            return False
        try:
            channel.send("outcome", event)
        except ChannelClosedError:
            return False
        return True


class Hub:
    """The parent's side of every channel: ingests' and inference processes'."""

    def __init__(self, broker: BrokerConfig, session: SessionConfig) -> None:
        self.results = Forwarder()
        self.broker = MemoryBroker(broker, self.results, count_in=False)  # ingests count
        self.session = session
        self.owners: dict[str, bytes | None] = {}  # session -> credential (quota)
        self.records: dict[str, tuple[bytes, float]] = {}  # ended calls, any process asks
        self.inference: dict[int, Channel] = {}
        self.ready: set[int] = set()  # inference processes whose models are loaded
        self.held: defaultdict[int, dict[tuple[str, int, str], Job]] = defaultdict(dict)

    # -- ingest processes -----------------------------------------------------------------
    def attach_ingest(self, index: int, channel: Channel) -> None:
        self.results.ingests[index] = channel
        channel.send("workers", len(self.ready))

    def detach_ingest(self, index: int) -> None:
        """An ingest process ended: its sessions end with it (their queued jobs dropped)."""
        self.results.ingests.pop(index, None)
        for session in [s for s, i in self.results.owner.items() if i == index]:
            self._close(session)

    def handle_ingest(self, index: int, channel: Channel, kind: str, body: Any) -> Any:
        if kind == "job":
            return self._submit(index, body)
        if kind == "open":
            rid, (session, owner) = body
            channel.reply(rid, self._open(index, session, owner))
            return None
        if kind == "close":
            return self._close(body)
        if kind == "ping":  # a barrier: every earlier message of this channel is handled
            channel.reply(body[0], None)
            return None
        if kind == "owner":
            rid, session = body
            channel.reply(rid, self.results.owner.get(session))
            return None
        if kind == "keep":
            session, record, ttl_s = body
            self._forget_records()
            self.records[session] = (record, time.monotonic() + ttl_s)
            return None
        if kind == "recall":
            rid, session = body
            found = self.records.get(session)
            channel.reply(rid, None if found is None else found[0])
            return None
        log.warning("ingest %d sent an unknown message %r", index, kind)
        return None

    def _open(self, index: int, session: str, owner: bytes | None) -> tuple[str, str] | None:
        """Admit a session for the whole server; a refusal's (code, reason), or None."""
        cap = self.session.max_sessions
        if len(self.owners) >= cap:
            return "limit", f"{len(self.owners)} sessions open; this server allows {cap}"
        quota = self.session.max_sessions_per_owner
        if owner is not None and quota:
            held = sum(1 for o in self.owners.values() if o == owner)
            if held >= quota:
                return "limit", (
                    f"this credential holds {held} sessions; each may hold {quota} "
                    "(session.max_sessions_per_owner)"
                )
        if session in self.owners:
            return "exists", f"session {session!r} is open already"
        self.owners[session] = owner
        self.results.owner[session] = index
        return None

    def _close(self, session: str) -> None:
        if session in self.results.owner:
            self.broker.close_now(session)  # queued jobs: discarded, their slots freed
        self.owners.pop(session, None)

    def _submit(self, index: int, job: Job) -> None:
        try:
            self.broker.submit_now(job)
        except UnknownSessionError:  # closed while the job was on its way: free its slot
            channel = self.results.ingests.get(index)
            if channel is not None and not channel.closed:
                channel.send("outcome", drop(job, DropReason.session_closed))

    def _forget_records(self) -> None:
        now = time.monotonic()
        for session in [s for s, (_, t) in self.records.items() if t <= now]:
            del self.records[session]

    # -- inference processes --------------------------------------------------------------
    def attach_inference(self, index: int, channel: Channel) -> None:
        self.inference[index] = channel

    def detach_inference(self, index: int) -> None:
        """An inference process ended: the jobs it held are answered ``worker_died``."""
        self.inference.pop(index, None)
        for job in self.held.pop(index, {}).values():
            self.results.put(job.session, drop(job, DropReason.worker_died))
        self._set_ready(index, False)

    def handle_inference(self, index: int, channel: Channel, kind: str, body: Any) -> Any:
        if kind == "take":
            rid, (modality, max_items, wait_s) = body
            return self._take(index, channel, rid, modality, max_items, wait_s)
        if kind == "publish":
            return self._publish(index, body)
        if kind == "depth":
            rid, modality = body
            channel.reply(rid, self.broker.queued(modality))
            return None
        if kind == "ready":
            self._set_ready(index, True)
            return None
        log.warning("inference %d sent an unknown message %r", index, kind)
        return None

    async def _take(
        self, index: int, channel: Channel, rid: int, modality: str, max_items: int, wait: float
    ) -> None:
        jobs = await self.broker.take(modality, max_items, wait)
        if channel.closed or index not in self.inference:  # it died while we waited
            for job in jobs:
                self.results.put(job.session, drop(job, DropReason.worker_died))
            return
        held = self.held[index]
        for job in jobs:
            held[(job.session, job.seq, job.modality)] = job
        channel.reply(rid, jobs)

    def _publish(self, index: int, outcomes: list[Outcome]) -> None:
        held = self.held[index]
        for outcome in outcomes:
            job = outcome.job
            held.pop((job.session, job.seq, job.modality), None)
        self.broker.publish_now(outcomes)

    def _set_ready(self, index: int, ready: bool) -> None:
        before = len(self.ready)
        (self.ready.add if ready else self.ready.discard)(index)
        if len(self.ready) != before:
            metrics.LOCAL_INFERENCE_READY.set(len(self.ready))
            for channel in self.results.ingests.values():
                if not channel.closed:
                    channel.send("workers", len(self.ready))
