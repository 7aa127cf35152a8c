"""The inference child's life: load the models, say ready, serve the hub's batches."""

from __future__ import annotations

import asyncio
import logging
import socket

from emostream.local.arena import Arena
from emostream.local.channel import Channel
from emostream.local.inference import HubWorker
from emostream.settings import Settings

log = logging.getLogger("emostream.local.inference")


async def run_inference(
    settings: Settings, index: int, control: socket.socket, arenas: dict[int, Arena]
) -> int:
    """Exit status: 0 when stopped, 3 when the face model is missing (the parent then
    stops restarting and readiness says why)."""
    from emostream.models.repository import ModelMissingError
    from emostream.models.worker_node import load_analyzers, run_worker

    settings = settings.model_copy(deep=True)
    settings.worker.metrics_port = 0  # /metrics is the server's, collected across processes
    settings.worker.name = f"inference-{index}"
    try:
        analyzers = await asyncio.to_thread(load_analyzers, settings)
    except ModelMissingError as exc:
        log.error("%s", exc)
        return 3
    channel = await Channel.open(control)
    gone = asyncio.Event()
    worker = HubWorker(settings.broker, channel, arenas)

    async def listen() -> None:
        await channel.serve(lambda kind, body: None)
        gone.set()

    reader = asyncio.create_task(listen())
    channel.send("ready")
    try:
        await run_worker(settings, analyzers, worker, gone)
    finally:
        reader.cancel()
    return 0
