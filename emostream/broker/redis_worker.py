"""The worker side of the Redis broker: take batches from the group, publish outcomes.

Workers ack and count jobs that are past their deadline instead of running them, and ack
and count entries they cannot read (``malformed``: any ``WireError``, a job of another
modality, a reply stream that is not an ingest node's) on the stream they were read from,
instead of crashing; a job whose header is readable but whose frame is not fails alone
(its session is told). Nothing an entry holds makes ``take`` raise. A worker that dies
leaves its jobs pending in the group; every worker runs ``XAUTOCLAIM`` every
``claim_interval_ms`` for entries idle longer than ``claim_idle_ms`` and runs or drops
(stale) them; one delivered more than ``max_deliveries`` times is a poison that took down
every worker that read it (a crash no check caught): acked as ``malformed``, not run.
Outcomes are published before their jobs are acked: at least once. From ``start`` (or its
first ``take``) to ``close`` a worker sends heartbeats, so ingest nodes know it is alive
(``redis_heartbeat.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

from redis.exceptions import ResponseError

from emostream import metrics
from emostream.broker.base import WorkerBroker
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.redis_heartbeat import beat, leave
from emostream.broker.redis_link import FAILURES, Backoff, RedisLink, default_consumer
from emostream.broker.wire import (
    Fields,
    WireError,
    decode_payload,
    encode_outcome,
    job_header,
)
from emostream.pipeline.jobs import DropReason, Job, Modality
from emostream.pipeline.outcomes import Outcome, drop, fail
from emostream.supervise import Supervised, supervise

log = logging.getLogger("emostream.broker.redis")


class RedisWorker(WorkerBroker):
    def __init__(self, config: BrokerConfig, consumer: str | None = None) -> None:
        self.config = config
        self.consumer = consumer or default_consumer()
        self.link = RedisLink(config)
        self._taking: set[Modality] = set()
        self._claim_at = 0.0
        self._tidy_at = time.monotonic() + 30
        self._early: list[Outcome] = []  # drops found while taking, published with the batch
        self._unreadable: dict[Modality, list[str]] = {}  # entries to ack without an outcome
        self._backoff = Backoff(config.max_backoff_s)
        self._depth_at: dict[Modality, float] = {}
        self._reply_prefix = self.link.results_stream("")
        self._heartbeat: Supervised | None = None

    @property
    def problem(self) -> str | None:
        return self.link.problem

    async def healthy(self) -> bool:
        exc = await self.link.ping()
        if exc is not None:
            self.link.down(exc)
            return False
        self.link.up()
        return True

    @property
    def tasks(self) -> list[Supervised]:
        return [] if self._heartbeat is None else [self._heartbeat]

    async def start(self) -> None:
        metrics.BROKER_UP.set(1)
        self._beat()

    def _beat(self) -> None:
        """Start the heartbeat, once: a worker that takes jobs is alive."""
        if self._heartbeat is None:
            self._heartbeat = supervise("redis-heartbeat", lambda: beat(self.link, self.consumer))

    async def close(self) -> None:
        if self._heartbeat is not None:
            await self._heartbeat.stop()
            await leave(self.link, self.consumer)
        if self._taking:
            await self._leave_group()
        await self.link.close()

    async def _leave_group(self) -> None:
        """Remove this consumer if it holds nothing; jobs it still holds get claimed."""
        with contextlib.suppress(*FAILURES):
            for modality in self._taking:
                stream = self.link.stream(modality)
                info = await self.link.redis.xpending(stream, self.config.group)
                mine = {c["name"].decode(): c["pending"] for c in info.get("consumers", [])}
                if not mine.get(self.consumer):
                    await self.link.redis.xgroup_delconsumer(
                        stream, self.config.group, self.consumer
                    )

    async def _ensure_group(self, modality: Modality) -> None:
        """Create the stream and group if missing (first worker, or Redis restarted empty)
        and join it, so the group lists this worker before it has had any job."""
        stream, group = self.link.stream(modality), self.config.group
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.link.redis.xgroup_create(stream, group, id="0", mkstream=True)
        await self.link.redis.xgroup_createconsumer(stream, group, self.consumer)

    async def take(self, modality: Modality, max_items: int, max_wait_s: float) -> list[Job]:
        """Claimed jobs of dead workers first, then new ones; may return [] when idle.

        An idle worker blocks at most ``claim_interval_ms`` per read, so it looks for
        abandoned jobs at least that often; a busy one looks at each call, at that rate.

        It always waits the full ``max_wait_s`` for more, unlike the embedded broker (which
        stops once every sending session is in the batch): sessions live in the ingest
        processes, so a worker could only learn them from a new registry in Redis kept
        alive by heartbeats (an ingest process may die without closing its sessions), read
        on every take; and with several workers on one stream the others' batches hold
        some sessions' jobs, so the rule would rarely fire. Not worth it yet.
        """
        out: list[Job] = []
        self._beat()
        try:
            if modality not in self._taking:
                await self._ensure_group(modality)
                self._taking.add(modality)
            now = time.monotonic()
            if now >= self._claim_at:
                self._claim_at = now + self.config.claim_interval_ms / 1000
                out += await self._claim(modality, max_items)
                if now >= self._tidy_at:
                    self._tidy_at = now + 30
                    await self._forget_idle_consumers(modality)
            if not out:  # idle: block until the first job (or the next claim check)
                await self._read_into(out, modality, max_items, self.config.claim_interval_ms)
            if out and len(out) < max_items:  # whatever else is already there
                await self._read_into(out, modality, max_items, None)
            if out and len(out) < max_items and max_wait_s > 0:
                # Wait T on our side, then read once more. Not ``BLOCK T``: Redis ends short
                # blocking reads only when its event loop next wakes (up to 1/hz = 100 ms
                # on a quiet server), which measured as +35 ms median latency.
                await asyncio.sleep(max_wait_s)
                await self._read_into(out, modality, max_items, None)
            self._backoff.reset()
            self.link.up()
        except FAILURES as exc:
            self.link.down(exc)
            await asyncio.sleep(self._backoff.next())
        except Exception:  # a bug here, not an entry (those are admitted or refused above)
            log.exception("taking %s jobs failed; retrying", modality)
            await asyncio.sleep(self._backoff.next())
        if self._early or self._unreadable:
            early, self._early = self._early, []
            await self.publish(early)
        await self._update_depth(modality)
        return out

    async def _read_into(
        self, out: list[Job], modality: Modality, max_items: int, block: int | None
    ) -> None:
        reply = await self._read_group(modality, max_items - len(out), block)
        for entry_id, fields in reply:
            job = self._admit(modality, entry_id.decode(), fields)
            if job is not None:
                out.append(job)

    async def _read_group(self, modality: Modality, count: int, block: int | None) -> list[Any]:
        stream = self.link.stream(modality)
        for attempt in (1, 2):
            try:
                reply: Any = await self.link.redis.xreadgroup(
                    self.config.group, self.consumer, {stream: ">"}, count, block
                )
                return list(reply[0][1]) if reply else []
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt == 2:
                    raise
                log.warning(
                    "group %s on %s missing (Redis restarted?): recreating",
                    self.config.group,
                    stream,
                )
                await self._ensure_group(modality)
        return []

    def _admit(self, modality: Modality, entry_id: str, fields: Fields) -> Job | None:
        """A runnable job, or None after dealing with a stale or unreadable entry.

        Unreadable entries are acked on ``modality``'s stream, the one they were read
        from, whatever they claim to be: acked anywhere else they would stay pending and
        be claimed and re-read forever.
        """
        try:
            job = job_header(fields, entry_id)
            if job.modality != modality:
                raise WireError(f"a {job.modality} job on the {modality} stream")
            if job.reply_to and not job.reply_to.startswith(self._reply_prefix):
                raise WireError(f"reply_to {job.reply_to[:64]!r} is not a results stream")
        except WireError as exc:
            self._refuse(modality, entry_id, str(exc))
            return None
        if job.deadline < time.monotonic():
            self._early.append(drop(job, DropReason.deadline))
            return None
        try:
            job.payload = decode_payload(fields, job)
        except WireError as exc:
            failed = fail(job, f"bad payload: {exc}")
            log.warning("job %s of session %s: %s", entry_id, job.session, failed.error)
            self._early.append(failed)
            return None
        return job

    def _refuse(self, modality: Modality, entry_id: str, why: str) -> None:
        """Count an entry as malformed and ack it (with the next publish), never run it."""
        metrics.FRAMES_DROPPED.labels(modality, DropReason.malformed.value).inc()
        stream = self.link.stream(modality)
        log.warning("malformed job %s on %s acked and dropped: %s", entry_id, stream, why)
        self._unreadable.setdefault(modality, []).append(entry_id)

    async def publish(self, outcomes: list[Outcome]) -> None:
        """Send outcomes to their ingest nodes, then ack their jobs (at least once)."""
        acks, self._unreadable = self._unreadable, {}
        if not outcomes and not acks:
            return
        pipe = self.link.redis.pipeline(transaction=False)
        targets: set[str] = set()
        for outcome in outcomes:
            job = outcome.job
            if job.reply_to and job.session:
                try:
                    fields = encode_outcome(outcome)
                except (ValueError, TypeError) as exc:  # acked all the same: never re-run
                    log.warning("outcome of job %s cannot be encoded: %s", job.token, exc)
                else:
                    pipe.xadd(
                        job.reply_to,
                        cast(Any, fields),
                        maxlen=self.config.results_max_len,
                        approximate=True,
                    )
                    targets.add(job.reply_to)
            if job.token:
                acks.setdefault(job.modality, []).append(job.token)
        for target in targets:
            pipe.expire(target, self.config.results_ttl_s)
        for modality, tokens in acks.items():
            pipe.xack(self.link.stream(modality), self.config.group, *tokens)
        try:
            await pipe.execute()
        except FAILURES as exc:
            log.warning(
                "publishing %d outcomes failed (%s); their jobs stay pending", len(outcomes), exc
            )

    async def _claim(self, modality: Modality, count: int) -> list[Job]:
        """Take over jobs that a dead (or stuck) worker left pending: run or drop them."""
        cfg = self.config
        reply = await self.link.redis.xautoclaim(
            self.link.stream(modality),
            cfg.group,
            self.consumer,
            cfg.claim_idle_ms,
            "0-0",
            count=count,
        )
        entries = [e for e in reply[1] if e and e[1] is not None]
        if not entries:
            return []
        metrics.JOBS_RECLAIMED.labels(modality).inc(len(entries))
        log.info("claimed %d pending job(s) on %s", len(entries), self.link.stream(modality))
        delivered = await self._deliveries(modality, [e[0] for e in entries])
        jobs = []
        for entry_id, fields in entries:
            times = delivered.get(entry_id, 0)
            if times > cfg.max_deliveries:  # every worker that read it so far died on it
                why = f"delivered {times} times, never answered"
                self._refuse(modality, entry_id.decode(), why)
                continue
            jobs.append(self._admit(modality, entry_id.decode(), fields))
        return [j for j in jobs if j is not None]

    async def _deliveries(self, modality: Modality, ids: list[bytes]) -> dict[bytes, int]:
        """How many times each of these pending entries has been delivered to a worker."""
        reply: Any = await self.link.redis.xpending_range(
            self.link.stream(modality),
            self.config.group,
            min=min(ids, key=_entry_order),
            max=max(ids, key=_entry_order),
            count=len(ids) + 256,
            consumername=self.consumer,
        )
        return {p["message_id"]: int(p["times_delivered"]) for p in reply}

    async def _forget_idle_consumers(self, modality: Modality) -> None:
        """Consumers of workers that are gone and hold nothing: remove them from the group."""
        stream = self.link.stream(modality)
        consumers = await self.link.redis.xinfo_consumers(stream, self.config.group)
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
            if name != self.consumer and c["pending"] == 0 and c["idle"] > 60_000:
                await self.link.redis.xgroup_delconsumer(stream, self.config.group, name)

    async def _update_depth(self, modality: Modality) -> None:
        now = time.monotonic()
        if now - self._depth_at.get(modality, 0.0) < 0.5:
            return
        self._depth_at[modality] = now
        with contextlib.suppress(*FAILURES):
            metrics.QUEUE_DEPTH.labels(modality).set(await self.depth(modality))

    async def depth(self, modality: Modality) -> int:
        stream = self.link.stream(modality)
        n = await self.link.depth(keys=[stream], args=[self.config.group, 100_000])
        return int(n)


def _entry_order(entry_id: bytes) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split(b"-"))
