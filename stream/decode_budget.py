"""The memory REST and offline work may decode at once (``limits.decode_budget_mb``).

A 1.6 kB WebP can claim 40 MP and cost 240 MB to decode, so a request is weighed by what
its image decodes to, not by its body: it reserves ``media.decode_bytes`` from the header
before a pixel is decoded and gives it back when the request ends, however it ends.
Requests that do not fit wait their turn (first come, first served) in a queue bounded in
length (``limits.decode_queue``) and in time (``limits.decode_wait_s``); past either, a 503
``server_busy`` with Retry-After. Live sessions never draw on it.

The count lives behind ``Ledger``: one process now (``LocalLedger``); a store shared by
several ingest processes behind one port can take its place without touching the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from emostream.stream.errors import ApiError

MB = 1024 * 1024
RETRY_AFTER_S = 2


class Ledger(Protocol):
    """Bytes reserved across the server: ``try_take`` reserves all of ``n`` or nothing."""

    def try_take(self, n: int) -> bool: ...

    def give(self, n: int) -> None: ...


class LocalLedger:
    """This process's count. On the event loop only, so plain integers need no lock.

    A reservation larger than the whole budget is granted alone (nothing else reserved),
    so a budget set below one image's cost slows such images down instead of refusing them.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_take(self, n: int) -> bool:
        if self.used and self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class DecodeBudget:
    """Reservations against a ``Ledger``, with a bounded first-come, first-served queue."""

    def __init__(self, ledger: Ledger, max_waiting: int, max_wait_s: float) -> None:
        self.ledger = ledger
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @asynccontextmanager
    async def reserve(self, n: int) -> AsyncIterator[None]:
        """Hold ``n`` bytes for the block: at once if they fit and nobody waits, else in
        the queue; a 503 ``server_busy`` when the queue is full or the wait too long."""
        if self._queue or not self.ledger.try_take(n):
            await self._wait(n)
        try:
            yield
        finally:
            self.ledger.give(n)
            self._grant()

    async def _wait(self, n: int) -> None:
        if len(self._queue) >= self.max_waiting:
            raise self._busy(f"{len(self._queue)} requests are already waiting to decode")
        entry = (n, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(entry[1]), self.max_wait_s)
        except BaseException as exc:  # the wait ran out, or the client left
            if entry[1].done():  # granted as it gave up: hand it on
                self.ledger.give(n)
            else:
                self._queue.remove(entry)
                entry[1].cancel()
            self._grant()
            if isinstance(exc, TimeoutError):
                raise self._busy(f"no room to decode within {self.max_wait_s:g} s") from None
            raise

    def _grant(self) -> None:
        """Wake the waiters at the head of the queue whose reservation now fits."""
        while self._queue and self.ledger.try_take(self._queue[0][0]):
            _, future = self._queue.popleft()
            future.set_result(None)

    @staticmethod
    def _busy(why: str) -> ApiError:
        return ApiError(
            503,
            "server_busy",
            f"{why}: images and recordings are decoded within a memory budget "
            "(limits.decode_budget_mb); retry in a moment",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
