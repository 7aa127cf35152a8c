"""One place that turns the broker settings into each role's broker.

``memory``: one in-process ``MemoryBroker`` plays both roles (the caller passes the same
object to sessions and to the in-process worker). A Redis URL: ``RedisIngest`` for an
ingest node, ``RedisWorker`` for a worker process.
"""

from __future__ import annotations

from emostream.broker.base import IngestBroker, WorkerBroker
from emostream.broker.memory import MemoryBroker
from emostream.settings import Settings


def make_ingest(settings: Settings) -> IngestBroker:
    if not settings.broker.is_redis:
        return MemoryBroker(settings.broker)
    from emostream.broker.redis_ingest import RedisIngest

    return RedisIngest(settings.broker)


def make_worker_broker(settings: Settings) -> WorkerBroker:
    if not settings.broker.is_redis:
        raise ValueError(
            f"a separate worker needs a shared broker: --broker redis://…, not "
            f"{settings.broker.url!r} (with 'memory' the worker runs inside `emostream serve`)"
        )
    from emostream.broker.redis_worker import RedisWorker

    return RedisWorker(settings.broker, consumer=settings.worker.name)
