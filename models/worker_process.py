"""``emostream worker``: one inference process that serves every ingest node through Redis.

It loads the production models (reporting a missing one, never faking it), says which
ONNX Runtime provider it got and the batch size that provider gets, exposes its own
``/metrics``, and joins the consumer group. SIGTERM or SIGINT: stop reading, finish and
publish the batch in progress (up to ``drain_timeout_s``), leave the group, exit 0. Jobs it
read but did not start stay pending and another worker claims them.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from emostream import metrics
from emostream.broker.factory import make_broker
from emostream.models.service import FaceService
from emostream.models.worker import FaceWorker
from emostream.settings import Settings

log = logging.getLogger("emostream.worker")


def load_service(settings: Settings) -> FaceService:
    return FaceService.from_settings(settings)


async def run_worker(settings: Settings, service: FaceService) -> None:
    if not settings.broker.is_redis:
        raise ValueError(
            f"a separate worker needs a shared broker: --broker redis://…, not "
            f"{settings.broker.url!r} (with 'memory' the worker runs inside `emostream serve`)"
        )
    broker = make_broker(settings)
    name = getattr(broker, "consumer", "worker")
    provider = service.provider
    config = settings.worker
    batch = config.batch_for(provider)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_host)
    metrics.WORKER_INFO.labels(name, provider, str(batch)).set(1)
    metrics.initialise("worker")
    log.info(
        "worker %s: %s on %s, detector %s, batch up to %d, wait %.1f ms, broker %s%s",
        name,
        service.card.ref,
        provider,
        service.detector_ref,
        batch,
        config.max_wait_ms,
        settings.broker.url,
        f", metrics on {config.metrics_host}:{config.metrics_port}" if config.metrics_port else "",
    )
    await broker.start()
    worker = FaceWorker(broker, service, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker.start()
    stopping = asyncio.create_task(stop.wait())
    running = worker.task
    assert running is not None
    await asyncio.wait({stopping, running}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():  # the loop itself ended: a bug, not a signal; say so and exit non-zero
        stopping.cancel()
        await broker.close()
        raise RuntimeError(f"worker loop ended: {running.exception()!r}")
    log.info("worker %s: stopping, finishing the batch in progress", name)
    await worker.stop(drain_s=config.drain_timeout_s)
    await broker.close()
    log.info("worker %s: stopped", name)
