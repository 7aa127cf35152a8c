"""What both Redis roles share: the connection, the key layout, the scripts, health.

Layout in Redis (``prefix`` = ``emostream``):

- ``emostream:jobs:face`` / ``emostream:jobs:voice``: one job stream per modality, capped
  with ``MAXLEN ~``, read by the consumer group ``emostream-workers``. Each worker is one
  consumer; ``XREADGROUP`` hands every job to exactly one of them.
- ``emostream:results:<node>``: one outcome stream per ingest node (``Job.reply_to``),
  read only by that node with ``XREAD``, capped, and expiring a minute after the last
  outcome so a vanished node leaves nothing behind.
- ``emostream:workers``: a sorted set of the workers' consumer names, each scored with
  the Redis time of its last heartbeat (``redis_heartbeat.py``).

Health: a role that fails to reach Redis calls ``down``; the first failure logs, sets
``emostream_broker_up`` to 0 and returns True so the role can react once (the ingest side
tells its sessions). ``up`` clears it. Retries back off exponentially, never blocking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from emostream import metrics
from emostream.broker import lua
from emostream.broker.broker_config import BrokerConfig
from emostream.pipeline.jobs import Modality

log = logging.getLogger("emostream.broker.redis")

#: What a call to Redis can raise when Redis is away or refuses: caught, noted, retried.
FAILURES = (RedisConnectionError, RedisTimeoutError, OSError, RedisError)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def honour_cancel() -> None:
    """Raise the cancel of this task if a Redis call swallowed it.

    redis-py (8.2) can swallow a ``CancelledError`` that lands while it connects; a loop
    that goes on calling Redis would then never stop. Loops call this after each call.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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


class RedisLink:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.redis = aioredis.Redis.from_url(
            config.url,
            socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # we retry ourselves, with backoff, never blocking
            decode_responses=False,
            protocol=2,  # replies parsed the long-standing way (dicts with str keys)
        )
        self.submit = self.redis.register_script(lua.SUBMIT)
        self.cancel = self.redis.register_script(lua.CANCEL)
        self.depth = self.redis.register_script(lua.DEPTH)
        self.beat = self.redis.register_script(lua.BEAT)
        self.alive = self.redis.register_script(lua.ALIVE)
        self.problem: str | None = None

    def stream(self, modality: Modality) -> str:
        return f"{self.config.prefix}:jobs:{modality}"

    def workers(self) -> str:
        return f"{self.config.prefix}:workers"

    def record(self, session: str) -> str:
        return f"{self.config.prefix}:ended:{session}"

    def results_stream(self, node: str) -> str:
        return f"{self.config.prefix}:results:{node}"

    def where(self) -> str:
        """Host and port only: what logs and ``/readyz`` may show (never the password)."""
        kw = self.redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def down(self, exc: BaseException) -> bool:
        """Note an outage; True the first time (so the caller reacts once)."""
        if self.problem is not None:
            return False
        self.problem = f"Redis at {self.where()} unreachable: {exc or type(exc).__name__}"
        if isinstance(exc, AuthenticationError):  # a wrong or missing password, not an outage
            self.problem = (
                f"Redis at {self.where()} refused our credentials: {exc} (the password goes "
                "in the broker URL: redis://:PASSWORD@HOST:PORT/DB; docs/SECURITY.md)"
            )
        log.warning("%s; retrying with backoff", self.problem)
        metrics.BROKER_UP.set(0)
        return True

    def up(self) -> None:
        if self.problem is not None:
            log.warning("Redis at %s reachable again", self.where())
            self.problem = None
        metrics.BROKER_UP.set(1)

    async def ping(self) -> BaseException | None:
        """One round trip (``/readyz``): None when Redis answered, else what went wrong."""
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):  # not wait_for
                await self.redis.ping()
        except (*FAILURES, TimeoutError) as exc:
            return exc
        return None

    async def close(self) -> None:
        await self.redis.aclose()
