"""The Redis Streams broker: ingest nodes and workers as separate processes, any number.

Layout in Redis (``prefix`` = ``emostream``):

- ``emostream:jobs:face`` / ``emostream:jobs:voice``: one job stream per modality, capped
  with ``MAXLEN ~``, read by the consumer group ``emostream-workers``. Each worker is one
  consumer; ``XREADGROUP`` hands every job to exactly one of them.
- ``emostream:results:<node>``: one result stream per ingest node (``Job.reply_to``), read
  only by that node with ``XREAD``, capped, and expiring a minute after the last result so
  a vanished node leaves nothing behind.

Real-time rules, the same as the embedded broker's: a session has at most
``max_in_flight`` jobs per modality that no worker has read yet; a newer frame deletes the
oldest of them (``superseded``, decided atomically in Redis, see ``lua.py``). Workers ack
and count jobs that are past their deadline instead of running them, and ack and count
entries they cannot read (``malformed``) instead of crashing.

Faults: a worker that dies leaves its jobs pending in the group; every worker runs
``XAUTOCLAIM`` every ``claim_interval_ms`` for entries idle longer than ``claim_idle_ms``
and runs or drops (stale) them. When Redis is unreachable the ingest node says so
(``problem``, hence ``/readyz``), tells each session once, drops frames as
``unavailable`` without waiting on the network, and retries with exponential backoff;
when Redis is back (even empty, after a restart) it recreates the stream and the group and
results resume. A job that nobody answers for ``lost_after_s`` past its deadline is
counted ``lost`` so no session waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import cv2
import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from emostream import metrics
from emostream.broker import lua
from emostream.broker.base import Broker, DropReason, Job, Modality, Result, count_drop
from emostream.broker.config import BrokerConfig
from emostream.broker.memory import UnknownSessionError
from emostream.broker.wire import (
    Fields,
    WireError,
    decode_frame,
    decode_result,
    encode_job,
    encode_result,
    job_header,
)

log = logging.getLogger(__name__)

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
EMPTY = np.empty((0,), np.uint8)
MODALITIES: tuple[Modality, ...] = ("face", "voice")


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Backoff:
    """Exponential retry delays: 0.1 s doubling up to a cap, reset by a success."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = 0.0

    def next(self) -> float:
        self.delay = min(self.cap, max(0.1, self.delay * 2))
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


class RedisBroker(Broker):
    def __init__(self, config: BrokerConfig, consumer: str | None = None) -> None:
        super().__init__(config.max_in_flight, config.deadline_s)
        self.config = config
        self.consumer = consumer or default_consumer()
        self.node = secrets.token_hex(6)
        self.results_key = f"{config.prefix}:results:{self.node}"
        self._redis = aioredis.Redis.from_url(
            config.url,
            socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # we retry ourselves, with backoff, never blocking
            decode_responses=False,
            protocol=2,  # replies parsed the long-standing way (dicts with str keys)
        )
        self._submit = self._redis.register_script(lua.SUBMIT)
        self._cancel = self._redis.register_script(lua.CANCEL)
        self._depth = self._redis.register_script(lua.DEPTH)
        # ingest side
        self._results: dict[str, asyncio.Queue[Result | None]] = {}
        self._outstanding: dict[str, dict[str, Job]] = {}  # session -> entry id -> job
        self._waiting: dict[tuple[str, Modality], list[str]] = {}  # ids no worker read yet
        self._reader: asyncio.Task[None] | None = None
        # worker side
        self._taking: set[Modality] = set()
        self._claim_at = 0.0
        self._tidy_at = time.monotonic() + 30
        self._early: list[Result] = []  # drops found while taking, published with the batch
        self._take_backoff = Backoff(config.max_backoff_s)
        self._depth_at: dict[Modality, float] = {}
        self._problem: str | None = None

    def stream(self, modality: Modality) -> str:
        return f"{self.config.prefix}:jobs:{modality}"

    # -- health -----------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        return self._problem

    def _down(self, exc: BaseException) -> None:
        if self._problem is None:
            self._problem = f"Redis at {self._where()} unreachable: {exc or type(exc).__name__}"
            log.warning("%s; retrying with backoff", self._problem)
            metrics.BROKER_UP.set(0)
            self._tell_sessions(self._problem)
            self._waiting.clear()  # after a restart those entries are gone anyway

    def _up(self) -> None:
        if self._problem is not None:
            log.warning("Redis at %s reachable again", self._where())
            self._problem = None
        metrics.BROKER_UP.set(1)

    def _where(self) -> str:
        kw = self._redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _tell_sessions(self, why: str) -> None:
        for session, q in self._results.items():
            q.put_nowait(
                Result(
                    session,
                    "face",
                    0,
                    0.0,
                    time.monotonic(),
                    {},
                    dropped=DropReason.unavailable,
                    error=why,
                )
            )

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self._redis.ping(), self.config.connect_timeout_s)
        except (*UNREACHABLE, RedisError, TimeoutError) as exc:
            self._down(exc)
            return False
        if self._reader is None:  # a worker-only broker has no reader loop to notice
            self._up()
        return self._problem is None

    async def start(self) -> None:
        metrics.BROKER_UP.set(1)

    async def close(self) -> None:
        for session in list(self._results):
            await self.close_session(session)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._taking:
            await self._leave_group()
        await self._redis.aclose()

    async def _leave_group(self) -> None:
        """Remove this consumer if it holds nothing; jobs it still holds get claimed."""
        with contextlib.suppress(*UNREACHABLE, RedisError):
            for modality in self._taking:
                info = await self._redis.xpending(self.stream(modality), self.config.group)
                mine = {c["name"].decode(): c["pending"] for c in info.get("consumers", [])}
                if not mine.get(self.consumer):
                    await self._redis.xgroup_delconsumer(
                        self.stream(modality), self.config.group, self.consumer
                    )

    # -- ingest side ------------------------------------------------------------------------

    async def open_session(self, session: str) -> None:
        self._results.setdefault(session, asyncio.Queue())
        self._outstanding.setdefault(session, {})
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(
                self._read_results(), name="redis-results"
            )

    async def close_session(self, session: str) -> None:
        for modality in MODALITIES:
            ids = self._waiting.pop((session, modality), [])
            if not ids or self._problem is not None:
                continue
            try:
                cancelled = await self._cancel(
                    keys=[self.stream(modality)], args=[self.config.group, *ids]
                )
            except (*UNREACHABLE, RedisError) as exc:
                log.debug("cancel for %s failed: %s", session, exc)
                continue
            jobs = self._outstanding.get(session, {})
            for entry in cancelled:
                job = jobs.pop(entry.decode(), None)
                if job is not None:
                    count_drop(job, DropReason.session_closed)
        self._outstanding.pop(session, None)
        q = self._results.pop(session, None)
        if q is not None:
            q.put_nowait(None)

    async def submit(self, job: Job) -> None:
        queue = self._results.get(job.session)
        if queue is None:
            raise UnknownSessionError(job.session)
        metrics.FRAMES_IN.labels(job.modality).inc()
        self._stamp(job)
        job.reply_to = self.results_key
        if self._problem is not None:
            count_drop(job, DropReason.unavailable)  # the session was told once
            return
        try:
            fields = await asyncio.to_thread(
                encode_job, job, self.config.codec, self.config.jpeg_quality
            )
        except (ValueError, cv2.error) as exc:  # a frame that cannot go on the wire
            failed = count_drop(job, DropReason.error)
            failed.error = f"cannot encode frame {job.payload.shape} {job.payload.dtype}: {exc}"
            queue.put_nowait(failed)
            return
        key = (job.session, job.modality)
        waiting = self._waiting.get(key, [])
        args: list[Any] = [self.config.group, self.max_in_flight, self.config.stream_max_len]
        args += [len(waiting), *waiting]
        for k, v in fields.items():
            args += [k, v]
        try:
            new, superseded, still = await self._submit(keys=[self.stream(job.modality)], args=args)
        except (*UNREACHABLE, RedisError) as exc:
            self._down(exc)
            count_drop(job, DropReason.unavailable)
            return
        outstanding = self._outstanding.get(job.session)
        if outstanding is None:  # closed while we were talking to Redis
            return
        outstanding[new.decode()] = dataclasses.replace(job, payload=EMPTY, token=new.decode())
        self._waiting[key] = [i.decode() for i in still]
        for entry in superseded:
            old = outstanding.pop(entry.decode(), None)
            if old is not None:
                queue.put_nowait(count_drop(old, DropReason.superseded))

    async def results(self, session: str) -> AsyncIterator[Result]:
        q = self._results.get(session)
        if q is None:
            raise UnknownSessionError(session)
        while True:
            item = await q.get()
            if item is None:
                return
            yield item

    async def _read_results(self) -> None:
        """Route this node's results to their sessions; notice outages and recover."""
        last = b"$"
        backoff = Backoff(self.config.max_backoff_s)
        while True:
            try:
                reply: Any = await self._redis.xread({self.results_key: last}, count=512, block=500)
            except (*UNREACHABLE, RedisError) as exc:
                self._down(exc)
                await asyncio.sleep(backoff.next())
                self._sweep_lost()
                continue
            backoff.reset()
            self._up()
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._route(fields)
            self._sweep_lost()

    def _route(self, fields: Fields) -> None:
        try:
            r = decode_result(fields)
        except (WireError, ValueError) as exc:
            log.warning("unreadable result on %s: %s", self.results_key, exc)
            return
        token = fields.get(b"token", b"").decode(errors="replace")
        job = self._outstanding.get(r.session, {}).pop(token, None)
        q = self._results.get(r.session)
        if job is None or q is None:
            return  # late (already counted lost) or its session has ended
        r.created = job.created  # our own clock, exactly
        q.put_nowait(r)

    def _sweep_lost(self) -> None:
        now = time.monotonic()
        for session, jobs in self._outstanding.items():
            late = [k for k, j in jobs.items() if now > j.deadline + self.config.lost_after_s]
            for k in late:
                job = jobs.pop(k)
                q = self._results.get(session)
                if q is not None:
                    q.put_nowait(count_drop(job, DropReason.lost))

    # -- worker side ------------------------------------------------------------------------

    async def _ensure_group(self, modality: Modality) -> None:
        """Create the stream and group if missing (first worker, or Redis restarted empty)
        and join it, so the group lists this worker before it has had any job."""
        stream, group = self.stream(modality), self.config.group
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        await self._redis.xgroup_createconsumer(stream, group, self.consumer)

    async def take(self, modality: Modality, max_items: int, max_wait_s: float) -> list[Job]:
        """Claimed jobs of dead workers first, then new ones; may return [] when idle.

        An idle worker blocks at most ``claim_interval_ms`` per read, so it looks for
        abandoned jobs at least that often; a busy one looks at each call, at that rate.
        """
        out: list[Job] = []
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
            self._take_backoff.reset()
            self._up()
        except (*UNREACHABLE, RedisError) as exc:
            self._down(exc)
            await asyncio.sleep(self._take_backoff.next())
        if self._early:
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
        stream = self.stream(modality)
        for attempt in (1, 2):
            try:
                reply: Any = await self._redis.xreadgroup(
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
        """A runnable job, or None after dealing with a stale or unreadable entry."""
        try:
            job = job_header(fields, entry_id)
        except (WireError, ValueError) as exc:
            metrics.FRAMES_DROPPED.labels(modality, DropReason.malformed.value).inc()
            log.warning(
                "malformed job %s on %s acked and dropped: %s", entry_id, self.stream(modality), exc
            )
            self._early.append(
                Result("", modality, 0, 0.0, 0.0, {}, dropped=DropReason.malformed, token=entry_id)
            )
            return None
        if job.deadline < time.monotonic():
            self._early.append(count_drop(job, DropReason.deadline))
            return None
        try:
            job.payload = decode_frame(fields)
        except WireError as exc:
            r = count_drop(job, DropReason.error)
            r.error = f"bad payload: {exc}"
            log.warning("job %s of session %s: %s", entry_id, job.session, r.error)
            self._early.append(r)
            return None
        return job

    async def publish(self, results: list[Result]) -> None:
        """Send results to their ingest nodes, then ack their jobs (at least once)."""
        if not results:
            return
        pipe = self._redis.pipeline(transaction=False)
        acks: dict[Modality, list[str]] = {}
        targets: set[str] = set()
        for r in results:
            if r.reply_to and r.session:
                fields = encode_result(r)
                fields[b"token"] = r.token.encode()
                pipe.xadd(
                    r.reply_to,
                    cast(Any, fields),
                    maxlen=self.config.results_max_len,
                    approximate=True,
                )
                targets.add(r.reply_to)
            if r.token:
                acks.setdefault(r.modality, []).append(r.token)
        for target in targets:
            pipe.expire(target, self.config.results_ttl_s)
        for modality, tokens in acks.items():
            pipe.xack(self.stream(modality), self.config.group, *tokens)
        try:
            await pipe.execute()
        except (*UNREACHABLE, RedisError) as exc:
            log.warning(
                "publishing %d results failed (%s); their jobs stay pending", len(results), exc
            )

    async def _claim(self, modality: Modality, count: int) -> list[Job]:
        """Take over jobs that a dead (or stuck) worker left pending: run or drop them."""
        cfg = self.config
        reply = await self._redis.xautoclaim(
            self.stream(modality), cfg.group, self.consumer, cfg.claim_idle_ms, "0-0", count=count
        )
        entries = [e for e in reply[1] if e and e[1] is not None]
        if not entries:
            return []
        metrics.JOBS_RECLAIMED.labels(modality).inc(len(entries))
        log.info("claimed %d pending job(s) on %s", len(entries), self.stream(modality))
        jobs = [self._admit(modality, e[0].decode(), e[1]) for e in entries]
        return [j for j in jobs if j is not None]

    async def _forget_idle_consumers(self, modality: Modality) -> None:
        """Consumers of workers that are gone and hold nothing: remove them from the group."""
        consumers = await self._redis.xinfo_consumers(self.stream(modality), self.config.group)
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
            if name != self.consumer and c["pending"] == 0 and c["idle"] > 60_000:
                await self._redis.xgroup_delconsumer(self.stream(modality), self.config.group, name)

    async def _update_depth(self, modality: Modality) -> None:
        now = time.monotonic()
        if now - self._depth_at.get(modality, 0.0) < 0.5:
            return
        self._depth_at[modality] = now
        with contextlib.suppress(*UNREACHABLE, RedisError):
            metrics.QUEUE_DEPTH.labels(modality).set(await self.depth(modality))

    async def depth(self, modality: Modality) -> int:
        n = await self._depth(keys=[self.stream(modality)], args=[self.config.group, 100_000])
        return int(n)
