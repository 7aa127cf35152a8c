"""An inference process of ``serve --processes``: ``emostream worker``'s loop, fed by the hub.

The batching, the model slots, promotion and shadowing are the worker's own
(``models/worker_node.py``); only the broker differs. ``take`` asks the hub for a batch and
reads each payload in place from the owning ingest's arena (a view of shared memory, no
copy); ``publish`` sends the outcomes back (headers and scores, no pixels).
"""

from __future__ import annotations

import asyncio
import contextlib

from emostream.broker.base import WorkerBroker
from emostream.broker.broker_config import BrokerConfig
from emostream.local.arena import Arena, Ref
from emostream.local.channel import Channel, ChannelClosedError
from emostream.pipeline.jobs import Job, Modality
from emostream.pipeline.outcomes import Outcome, fail


class HubWorker(WorkerBroker):
    payloads_outlive_publish = False  # the ingest reuses a slot once its outcome is back

    def __init__(self, config: BrokerConfig, channel: Channel, arenas: dict[int, Arena]) -> None:
        self.config = config
        self.channel = channel
        self.arenas = arenas
        self.consumer = "local"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.channel.close()

    async def take(self, modality: Modality, max_items: int, max_wait_s: float) -> list[Job]:
        try:
            jobs: list[Job] = await self.channel.call("take", (modality, max_items, max_wait_s))
        except ChannelClosedError:
            await asyncio.sleep(3600)  # the parent is gone; run_worker stops on ``gone``
            return []
        ready: list[Job] = []
        bad: list[Outcome] = []
        for job in jobs:
            try:
                ref = Ref.parse(job.token)
                job.payload = self.arenas[ref.arena].view(ref)
            except (ValueError, KeyError) as exc:
                bad.append(fail(job, f"payload not readable from shared memory: {exc}"))
                continue
            ready.append(job)
        if bad:
            await self.publish(bad)
        return ready

    async def publish(self, outcomes: list[Outcome]) -> None:
        with contextlib.suppress(ChannelClosedError):
            self.channel.send("publish", outcomes)

    async def depth(self, modality: Modality) -> int:
        try:
            found = await self.channel.call("depth", modality)
        except ChannelClosedError:
            return 0
        return int(found)
