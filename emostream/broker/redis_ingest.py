"""The ingest side of the Redis broker: submit frames, route outcomes back to sessions.

Real-time rules, the same as the embedded broker's: a session has at most
``max_in_flight`` jobs per modality that no worker has read yet; a newer frame deletes the
oldest of them (``superseded``, decided atomically in Redis, see ``lua.py``).

Faults: when Redis is unreachable this node says so (``problem``, hence ``/readyz``), tells
each session once, drops frames as ``unavailable`` without waiting on the network, and
retries with exponential backoff; when Redis is back (even empty, after a restart) the
scripts recreate the stream and the group and outcomes resume. A job that nobody answers
for ``lost_after_s`` past its deadline is counted ``lost`` so no session waits on it.
When no worker has sent a heartbeat for ``worker_timeout_s``, ``problem`` says so and each
session hears it once (``no_worker``, ``redis_heartbeat.py``), one opened meanwhile at open.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2

from emostream import metrics
from emostream.broker.base import IngestBroker, UnknownSessionError, stamp
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.outage import Outage
from emostream.broker.redis_heartbeat import WorkerWatch
from emostream.broker.redis_link import FAILURES, Backoff, RedisLink
from emostream.broker.session_queues import SessionQueues
from emostream.broker.wire import Fields, WireError, decode_outcome, encode_job
from emostream.modalities import names, spec
from emostream.pipeline.jobs import DropReason, Job, Modality
from emostream.pipeline.outcomes import BrokerNotice, SessionEvent, drop, fail
from emostream.supervise import Supervised, supervise

log = logging.getLogger("emostream.broker.redis")

ENCODE_THREADS = 2  # JPEG encoding releases the GIL; more than the cores buys nothing here


class RedisIngest(IngestBroker):
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.link = RedisLink(config)
        self.node = secrets.token_hex(6)
        self.results_key = self.link.results_stream(self.node)
        self._results = SessionQueues()
        self._outstanding: dict[str, dict[str, Job]] = {}  # session -> entry id -> header
        self._waiting: dict[tuple[str, Modality], list[str]] = {}  # ids no worker read yet
        self._reader: Supervised | None = None
        self._no_worker = Outage(self._results)
        self._watch: Supervised | None = None
        self._last = b"$"  # the last results entry read (kept across reader restarts)
        # Frames are JPEG-encoded off the loop in threads of our own: a fixed number, not
        # the default executor's, which grows with the sessions that happen to overlap.
        self._encoder = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="jpeg-encode")

    @property
    def problem(self) -> str | None:
        no_worker = self._no_worker.current
        return self.link.problem or (None if no_worker is None else no_worker.detail)

    @property
    def tasks(self) -> list[Supervised]:
        return [t for t in (self._reader, self._watch) if t is not None]

    def _down(self, exc: BaseException) -> None:
        if self.link.down(exc):
            assert self.link.problem is not None
            self._results.tell_all(BrokerNotice(self.link.problem))
            self._waiting.clear()  # after a restart those entries are gone anyway

    async def healthy(self) -> bool:
        exc = await self.link.ping()
        if exc is not None:
            self._down(exc)
            return False
        if self._reader is None:  # no reader loop yet to notice that Redis is back
            self.link.up()
        return self.problem is None

    async def start(self) -> None:
        metrics.BROKER_UP.set(1)
        if self.config.worker_timeout_s > 0 and self._watch is None:
            watch = WorkerWatch(self.link, self.config, self._no_worker)
            self._watch = supervise("redis-workers", watch.run)

    async def close(self) -> None:
        for session in self._results.sessions():
            await self.close_session(session)
        for task in self.tasks:
            await task.stop()
        await self.link.close()
        self._encoder.shutdown(wait=False, cancel_futures=True)

    async def open_session(self, session: str, owner: bytes | None = None) -> None:
        self._results.open(session)
        self._outstanding.setdefault(session, {})
        self._no_worker.on_open(session)
        if self._reader is None:
            self._reader = supervise("redis-results", self._read_results)

    async def close_session(self, session: str) -> None:
        for modality in names():
            ids = self._waiting.pop((session, modality), [])
            if not ids or self.link.problem is not None:
                continue
            try:
                cancelled = await self.link.cancel(
                    keys=[self.link.stream(modality)], args=[self.config.group, *ids]
                )
            except FAILURES as exc:
                log.debug("cancel for %s failed: %s", session, exc)
                continue
            jobs = self._outstanding.get(session, {})
            for entry in cancelled:
                job = jobs.pop(entry.decode(), None)
                if job is not None:
                    drop(job, DropReason.session_closed)
        self._outstanding.pop(session, None)
        self._results.close(session)

    async def submit(self, job: Job) -> None:
        if job.session not in self._results:
            raise UnknownSessionError(job.session)
        metrics.FRAMES_IN.labels(job.modality).inc()
        stamp(job, self.config)
        job.reply_to = self.results_key
        if self.link.problem is not None:
            drop(job, DropReason.unavailable)  # the session was told once
            return
        try:
            fields = await asyncio.get_running_loop().run_in_executor(
                self._encoder,
                encode_job,
                job,
                self.config.codec,
                self.config.jpeg_quality,
                self.config.audio_codec,
            )
        except (ValueError, cv2.error) as exc:  # a frame that cannot go on the wire
            why = f"cannot encode frame {job.payload.shape} {job.payload.dtype}: {exc}"
            self._results.put(job.session, fail(job, why))
            return
        key = (job.session, job.modality)
        waiting = self._waiting.get(key, [])
        args: list[Any] = [self.config.group, spec(job.modality).in_flight(self.config)]
        args += [self.config.stream_max_len, len(waiting), *waiting]
        for k, v in fields.items():
            args += [k, v]
        try:
            reply = await self.link.submit(keys=[self.link.stream(job.modality)], args=args)
        except FAILURES as exc:
            self._down(exc)
            drop(job, DropReason.unavailable)
            return
        new, superseded, still = reply
        outstanding = self._outstanding.get(job.session)
        if outstanding is None:  # closed while we were talking to Redis
            return
        header = job.header()
        header.token = new.decode()
        outstanding[header.token] = header
        self._waiting[key] = [i.decode() for i in still]
        for entry in superseded:
            old = outstanding.pop(entry.decode(), None)
            if old is not None:
                self._results.put(job.session, drop(old, DropReason.superseded))

    async def keep_record(self, session: str, record: bytes, ttl_s: float) -> None:
        """``SET prefix:ended:<session> record EX ttl``: any ingest node answers for it."""
        if ttl_s <= 0:
            return
        try:
            await self.link.redis.set(self.link.record(session), record, ex=max(1, int(ttl_s)))
        except FAILURES as exc:  # the summary stays on this node; the call is over anyway
            log.warning("summary of %s not kept in Redis (%r)", session, exc)

    async def recall_record(self, session: str) -> bytes | None:
        try:
            found = await self.link.redis.get(self.link.record(session))
        except FAILURES as exc:
            log.warning("summary of %s not read from Redis (%r)", session, exc)
            return None
        return found if isinstance(found, bytes) else None

    def results(self, session: str) -> AsyncIterator[SessionEvent]:
        return self._results.read(session)

    async def _read_results(self) -> None:
        """Route this node's outcomes to their sessions; notice outages and recover.

        Supervised (restarted if it ever raises); it goes on from the last entry it read.
        """
        backoff = Backoff(self.config.max_backoff_s)
        while True:
            try:
                reply: Any = await self.link.redis.xread(
                    {self.results_key: self._last}, count=512, block=500
                )
            except FAILURES as exc:
                self._down(exc)
                await asyncio.sleep(backoff.next())
                self._sweep_lost()
                continue
            backoff.reset()
            self.link.up()
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self._last = entry_id
                    self._route(fields)
            self._sweep_lost()

    def _route(self, fields: Fields) -> None:
        try:
            outcome = decode_outcome(fields)
        except WireError as exc:
            metrics.RESULTS_MALFORMED.inc()
            log.warning("unreadable outcome on %s skipped: %s", self.results_key, exc)
            return
        job = outcome.job
        mine = self._outstanding.get(job.session, {}).pop(job.token, None)
        if mine is None:
            return  # late (already counted lost) or its session has ended
        job.created = mine.created  # our own clock, exactly
        self._results.put(job.session, outcome)

    def _sweep_lost(self) -> None:
        now = time.monotonic()
        for session, jobs in self._outstanding.items():
            late = [k for k, j in jobs.items() if now > j.deadline + self.config.lost_after_s]
            for k in late:
                self._results.put(session, drop(jobs.pop(k), DropReason.lost))
