"""One session's results fanned out to its SSE subscribers, each through a bounded queue.

A slow reader loses its oldest messages and never holds the session up; the subscribers
of a session are capped. Closing always delivers the end marker (room is made in a full
queue), and a stream also watches the closed flag while it waits, so no stream outlives
its session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

QUEUE_SIZE = 64  # messages buffered per subscriber before the oldest are dropped
END_EVENT = "event: end\ndata: {}\n\n"

Queue = asyncio.Queue[str | None]  # None: the session ended


class SubscriberLimitError(RuntimeError):
    pass


def _put(queue: Queue, item: str | None) -> None:
    if queue.full():
        queue.get_nowait()  # drop the oldest, keep the newest (and always the end marker)
    queue.put_nowait(item)


class Fanout:
    def __init__(self, max_subscribers: int, queue_size: int = QUEUE_SIZE) -> None:
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self.queues: set[Queue] = set()
        self.closed = asyncio.Event()

    def __len__(self) -> int:
        return len(self.queues)

    def subscribe(self) -> Queue:
        if len(self.queues) >= self.max_subscribers:
            raise SubscriberLimitError(
                f"this session has {len(self.queues)} event streams open and allows "
                f"{self.max_subscribers}; close one first"
            )
        queue: Queue = asyncio.Queue(self.queue_size)
        if self.closed.is_set():
            queue.put_nowait(None)  # subscribed as the session ended: end at once
        else:
            self.queues.add(queue)
        return queue

    def unsubscribe(self, queue: Queue) -> None:
        self.queues.discard(queue)

    def publish(self, text: str) -> None:
        for queue in list(self.queues):
            _put(queue, text)

    def close(self) -> None:
        self.closed.set()
        for queue in list(self.queues):
            _put(queue, None)
        self.queues.clear()


async def event_stream(
    fanout: Fanout, queue: Queue, session_id: str, heartbeat_s: float
) -> AsyncIterator[str]:
    """Server-Sent Events from ``queue``: a comment, ``data:`` lines, keep-alives, ``end``."""
    try:
        yield f": session {session_id}\n\n"
        while True:
            if queue.empty() and fanout.closed.is_set():
                yield END_EVENT
                return
            try:
                async with asyncio.timeout(heartbeat_s):  # not wait_for (py3.11 cancel race)
                    item = await queue.get()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                yield END_EVENT
                return
            yield f"data: {item}\n\n"
    finally:
        fanout.unsubscribe(queue)
