"""The parent and each child talk over one Unix stream socket: length-prefixed pickles.

Messages are small (job headers with a shared-memory ``Ref``, outcomes, requests and their
replies), between processes of the same program started by the same parent, so pickle is
safe here and costs a few microseconds. A request carries an id and its reply the same
id, so one channel carries many requests at once (``call``) and one-way messages (``send``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("emostream.local.channel")
HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024  # a message this big is a bug, not traffic


class ChannelClosedError(ConnectionError):
    """The other end went away (its process ended)."""


class Channel:
    """One end of a parent-child socket: ``send`` one-way, ``call`` for a reply,
    ``serve`` to read until the other end closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    @classmethod
    def unopened(cls) -> Channel:
        """A closed channel, until ``open`` makes the real one (sends fail meanwhile)."""
        channel = cls.__new__(cls)
        channel._waiting, channel._tasks, channel.closed = {}, set(), True
        return channel

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_MESSAGE)
        return cls(reader, writer)

    def send(self, kind: str, body: Any = None, reply_to: int = 0) -> None:
        """Queue a message (never blocks; the socket buffer drains in the background)."""
        if self.closed:
            raise ChannelClosedError("channel closed")
        data = pickle.dumps((kind, reply_to, body), protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(HEADER.pack(len(data)) + data)

    async def call(self, kind: str, body: Any = None) -> Any:
        """Send a request and wait for its reply (``ChannelClosedError`` if the other
        end goes first)."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            self.send(kind, (rid, body))
            return await fut
        finally:
            self._waiting.pop(rid, None)

    def reply(self, rid: int, body: Any) -> None:
        if not self.closed:
            self.send("reply", body, reply_to=rid)

    async def serve(self, handle: Callable[[str, Any], Awaitable[None] | None]) -> None:
        """Read messages until the other end closes; replies settle ``call``s, the rest
        go to ``handle(kind, body)``. A handler's coroutine runs as a task of its own, so
        one that waits (a batch being gathered) never holds up the next message; tasks
        start in the order their messages came."""
        try:
            while True:
                try:
                    head = await self._reader.readexactly(HEADER.size)
                    (size,) = HEADER.unpack(head)
                    if size > MAX_MESSAGE:
                        raise ChannelClosedError(f"message of {size} bytes")
                    kind, rid, body = pickle.loads(await self._reader.readexactly(size))
                except (asyncio.IncompleteReadError, ConnectionError, OSError):
                    return
                if kind == "reply":
                    fut = self._waiting.get(rid)
                    if fut is not None and not fut.done():
                        fut.set_result(body)
                    continue
                result = handle(kind, body)
                if result is not None:
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
        finally:
            self.close()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a message failed", exc_info=task.exception())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ChannelClosedError("the other process ended"))
        self._writer.close()
