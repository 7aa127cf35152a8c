"""One place that turns ``--broker`` (``memory`` or a Redis URL) into a Broker."""

from __future__ import annotations

from emostream.broker.base import Broker
from emostream.broker.memory import MemoryBroker
from emostream.settings import Settings


def make_broker(settings: Settings) -> Broker:
    cfg = settings.broker
    if not cfg.is_redis:
        return MemoryBroker(max_in_flight=cfg.max_in_flight, deadline_s=cfg.deadline_s)
    from emostream.broker.redis import RedisBroker

    return RedisBroker(cfg, consumer=settings.worker.name)
