"""Each open session's queue of outcomes, as the ingest side of every broker keeps them.

Unbounded on purpose: what goes in is bounded upstream (at most ``max_in_flight`` jobs per
session are outstanding, and each yields one outcome), and the session's reader drains it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from emostream.broker.base import UnknownSessionError
from emostream.pipeline.outcomes import Dropped, SessionEvent


class SessionQueues:
    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[SessionEvent | None]] = {}

    def __contains__(self, session: object) -> bool:
        return session in self._queues

    def sessions(self) -> list[str]:
        return list(self._queues)

    def open(self, session: str) -> None:
        self._queues.setdefault(session, asyncio.Queue())

    def close(self, session: str) -> None:
        """End the session's stream: its reader sees the end after what is queued."""
        q = self._queues.pop(session, None)
        if q is not None:
            q.put_nowait(None)

    def put(self, session: str, event: SessionEvent) -> bool:
        """Queue an event; False when the session has ended meanwhile (it is dropped)."""
        q = self._queues.get(session)
        if q is None:
            return False
        q.put_nowait(event)
        return True

    def discard(self, session: str, dropped: Dropped) -> None:
        """A queued job of a closing session, dropped unseen: nothing to tell in-process
        (the session is going); a remote owner still frees the job's payload."""

    def tell_all(self, event: SessionEvent) -> None:
        for q in self._queues.values():
            q.put_nowait(event)

    async def read(self, session: str) -> AsyncIterator[SessionEvent]:
        q = self._queues.get(session)
        if q is None:
            raise UnknownSessionError(session)
        while True:
            item = await q.get()
            if item is None:
                return
            yield item
