"""Whether any worker is alive: heartbeats in Redis, watched by every ingest node.

Without it, an ingest node whose workers are all gone stays ready and its clients hear
nothing until their jobs are counted ``lost``. So each worker, every ``heartbeat_ms``,
scores its consumer name in ``emostream:workers`` with Redis' own clock (``ZADD``; removed
on a clean exit), and each ingest node looks as often whether any score is younger than
``worker_timeout_s``, again by Redis' clock, so no two machines' clocks are ever compared.
None: the node's ``problem`` says so (``/readyz`` 503) and each session hears one
``no_worker`` notice (``outage.Outage``); a worker back ends the outage.

An ingest node judges only after it has watched for a whole ``worker_timeout_s`` with
Redis answering: just started, or just reconnected to a Redis that restarted empty, it
gives the workers that long to beat again before saying none is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from emostream.broker.broker_config import BrokerConfig
from emostream.broker.outage import NO_WORKER, Outage
from emostream.broker.redis_link import FAILURES, RedisLink, honour_cancel

log = logging.getLogger("emostream.broker.redis")

FORGET_AFTER_S = 3600  # a worker silent this long leaves the set (a restart names a new one)


async def beat(link: RedisLink, consumer: str) -> None:
    """Say, every ``heartbeat_ms``, that this worker is alive (supervised by the worker).

    Redis being away is not this loop's to report (``take`` does): it just beats again.
    """
    while True:
        try:
            await link.beat(keys=[link.workers()], args=[consumer, FORGET_AFTER_S])
        except FAILURES as exc:
            log.debug("heartbeat of %s not sent: %r", consumer, exc)
        honour_cancel()
        await asyncio.sleep(link.config.heartbeat_s)


async def leave(link: RedisLink, consumer: str) -> None:
    """A clean exit: no longer counted alive, at once."""
    with contextlib.suppress(*FAILURES):
        await link.redis.zrem(link.workers(), consumer)


class WorkerWatch:
    """An ingest node's view of the workers: ``run`` begins and ends ``outage``."""

    def __init__(self, link: RedisLink, config: BrokerConfig, outage: Outage) -> None:
        self.link = link
        self.config = config
        self.outage = outage

    @property
    def detail(self) -> str:
        return (
            f"no worker alive: none has sent a heartbeat to Redis at {self.link.where()} for "
            f"{self.config.worker_timeout_s:g} s (start one: emostream worker --broker ...)"
        )

    async def alive(self) -> int:
        """Workers that beat within ``worker_timeout_s``, by Redis' clock."""
        keys, args = [self.link.workers()], [self.config.worker_timeout_s]
        return int(await self.link.alive(keys=keys, args=args))

    async def run(self) -> None:
        """Look every ``heartbeat_ms``; supervised by the ingest node."""
        watching_since: float | None = None  # Redis has answered every look since then
        while True:
            try:
                alive = await self.alive()
            except FAILURES as exc:  # the link's own outage says so; judge again after
                log.debug("worker heartbeats not read: %r", exc)
                watching_since = None
            else:
                now = time.monotonic()
                watching_since = now if watching_since is None else watching_since
                if alive:
                    self.outage.end()
                elif now - watching_since >= self.config.worker_timeout_s:
                    self.outage.begin(NO_WORKER, self.detail)
            honour_cancel()
            await asyncio.sleep(self.config.heartbeat_s)
