"""One place that turns ``--broker`` (``memory`` or a Redis URL) into a Broker."""

from __future__ import annotations

from emostream.broker.base import Broker
from emostream.broker.memory import MemoryBroker
from emostream.settings import Settings

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class BrokerURLError(ValueError):
    pass


def is_redis(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def check_url(url: str) -> str:
    if url == "memory" or is_redis(url):
        return url
    raise BrokerURLError(
        f"broker {url!r} not understood: use 'memory' or a Redis URL such as "
        "redis://127.0.0.1:6379/0"
    )


def make_broker(settings: Settings) -> Broker:
    url = check_url(settings.broker)
    deadline_s = settings.deadline_ms / 1000.0
    if url == "memory":
        return MemoryBroker(max_in_flight=settings.max_in_flight, deadline_s=deadline_s)
    from emostream.broker.redis import RedisBroker, RedisBrokerConfig

    config = RedisBrokerConfig(
        url=url,
        codec=settings.broker_codec,
        jpeg_quality=settings.broker_jpeg_quality,
        stream_max_len=settings.broker_stream_max_len,
        claim_idle_ms=settings.claim_idle_ms,
    )
    if settings.worker_name:
        config.consumer = settings.worker_name
    return RedisBroker(config, max_in_flight=settings.max_in_flight, deadline_s=deadline_s)
