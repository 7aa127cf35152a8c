"""The local multi-process broker's three parts wired in one event loop, for tests.

A hub, an ingest (``LocalIngest`` on its own arena) and an inference side (``HubWorker``
reading that arena through a second mapping), joined by real socket pairs exactly as the
supervisor joins its children; only the processes are missing, so the broker contract
tests run against it as they run against ``memory`` and Redis.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from emostream.broker.broker_config import BrokerConfig
from emostream.local.arena import Arena, Layout
from emostream.local.channel import Channel
from emostream.local.hub import Hub
from emostream.local.inference import HubWorker
from emostream.local.ingest import LocalIngest
from emostream.pipeline.jobs import Job
from emostream.stream.server_config import SessionConfig

LAYOUT = Layout(small_bytes=128 * 1024, small=32, large_bytes=640 * 640 * 3, large=8)


class SyncedIngest(LocalIngest):
    """A ``LocalIngest`` whose submit returns once the hub has queued the job (a ping
    behind it), so a test's next step on the worker side sees it, as in-process."""

    async def submit(self, job: Job) -> None:
        await super().submit(job)
        await self.channel.call("ping")

    async def close_session(self, session: str) -> None:
        await super().close_session(session)
        if not self.channel.closed:
            await self.channel.call("ping")


@dataclass
class Local:
    hub: Hub
    ingest: LocalIngest
    worker: HubWorker
    arena: Arena
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    hub_channels: dict[str, Channel] = field(default_factory=dict)

    async def close(self) -> None:
        await self.ingest.close()
        await self.worker.close()
        for ch in self.hub_channels.values():
            ch.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.arena.close()


async def local_broker(
    config: BrokerConfig, session: SessionConfig | None = None, layout: Layout = LAYOUT
) -> Local:
    """Started and connected; the worker has said ready."""
    hub = Hub(config, session or SessionConfig())
    arena = Arena.create(0, layout)
    ours, hubs = socket.socketpair()
    ingest = SyncedIngest(config, ours, Arena(0, arena.fd, layout))
    hub_ingest = await Channel.open(hubs)
    hub.attach_ingest(0, hub_ingest)
    await ingest.start()
    w_ours, w_hubs = socket.socketpair()
    worker = HubWorker(config, await Channel.open(w_ours), {0: Arena(0, arena.fd, layout)})
    hub_worker = await Channel.open(w_hubs)
    hub.attach_inference(0, hub_worker)
    local = Local(
        hub, ingest, worker, arena, hub_channels={"ingest": hub_ingest, "worker": hub_worker}
    )
    local.tasks = [
        asyncio.create_task(hub_ingest.serve(lambda k, b: hub.handle_ingest(0, hub_ingest, k, b))),
        asyncio.create_task(
            hub_worker.serve(lambda k, b: hub.handle_inference(0, hub_worker, k, b))
        ),
        asyncio.create_task(worker.channel.serve(lambda k, b: None)),
    ]
    worker.channel.send("ready")
    for _ in range(100):
        if ingest.workers == 1:
            break
        await asyncio.sleep(0.01)
    return local
