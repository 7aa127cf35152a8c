"""``emostream worker``: one inference process that serves every ingest node through Redis.

It loads the production models (reporting a missing one, never faking it: without a voice
model it serves faces and says which command trains one), says which
ONNX Runtime provider it got and the batch size that provider gets, exposes its own
``/metrics``, and joins the consumer group. A watcher per model follows the alias file and
switches to a promoted version, or shadows a candidate (``models/watch.py``). SIGTERM or
SIGINT: stop reading, finish and publish the batch in progress (up to ``drain_timeout_s``),
leave the group, exit 0. Jobs it read but did not start stay pending and another worker
claims them.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from emostream import metrics
from emostream.broker.base import WorkerBroker
from emostream.broker.factory import make_worker_broker
from emostream.modalities import registered, spec
from emostream.models.batching import BatchWorker
from emostream.models.repository import ModelRepository
from emostream.models.serving import ModelSlot
from emostream.models.watch import ModelWatcher
from emostream.pipeline.analyzer import Analyzer
from emostream.settings import Settings

log = logging.getLogger("emostream.worker")


def load_analyzers(settings: Settings) -> list[Analyzer]:
    """The analyzers this worker serves, one per registered modality: a required one
    (faces) raises when its model is missing; an optional one (voice) is left out with a
    warning naming the command that makes it."""
    served: list[Analyzer] = []
    for modality in registered():
        analyzer = modality.load(settings, ingest=False).analyzer
        if analyzer is not None:
            served.append(analyzer)
    return served


async def run_worker(
    settings: Settings,
    analyzers: list[Analyzer],
    broker: WorkerBroker | None = None,
    gone: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``gone``: the local broker's parent went away).

    ``broker``: the local multi-process broker's worker side; by default Redis's.
    """
    broker = broker or make_worker_broker(settings)
    name = getattr(broker, "consumer", "worker")
    config = settings.worker
    slots = [ModelSlot(a) for a in analyzers]
    workers = [BatchWorker(broker, slot, config) for slot in slots]
    repo = ModelRepository(settings.model_root)
    watchers = [
        ModelWatcher(
            slot,
            repo,
            spec(slot.analyzer.modality).model_config(settings),
            settings.runner,
            settings.drift,
            shadow=True,
        )
        for slot in slots
    ]
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_host)
    for a, w in zip(analyzers, workers, strict=True):
        metrics.WORKER_INFO.labels(name, a.provider, str(w.max_batch)).set(1)
        metrics.initialise("worker", a.modality)
        log.info(
            "worker %s: %s on %s, %s, batch up to %d, wait %.1f ms, broker %s%s",
            name,
            a.model,
            a.provider,
            spec(a.modality).describe(a),
            w.max_batch,
            config.max_wait_ms,
            settings.broker.redacted_url,
            f", metrics on {config.metrics_host}:{config.metrics_port}"
            if config.metrics_port
            else "",
        )
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    metrics.count_tasks(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for w in workers:
        w.start()
    for watcher in watchers:
        watcher.start()
    if gone is not None:
        loop.create_task(gone.wait()).add_done_callback(lambda _: stop.set())
    stopping = asyncio.create_task(stop.wait())
    running = {w.task for w in workers if w.task is not None}
    done, _ = await asyncio.wait({stopping, *running}, return_when=asyncio.FIRST_COMPLETED)
    ended = [t for t in done if t is not stopping]
    if ended:  # a loop itself ended: a bug, not a signal; say so and exit non-zero
        stopping.cancel()
        for watcher in watchers:
            await watcher.stop()
        await broker.close()
        raise RuntimeError(f"worker loop ended: {ended[0].exception()!r}")
    log.info("worker %s: stopping, finishing the batch in progress", name)
    for watcher in watchers:
        await watcher.stop()
    for w in workers:
        await w.stop(drain_s=config.drain_timeout_s)
    await broker.close()
    log.info("worker %s: stopped", name)
