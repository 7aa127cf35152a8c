"""What every transport hands a session: a track's decoded frames, queued for its reader.

A transport pushes frames as its protocol delivers them (a WebSocket message, a Python
call) and the session's modality reader iterates them; ``end()`` ends the track as a
hang-up does. A bounded queue (``limit``) drops its oldest frame when the reader is that
far behind: a gap, where the windows restart, never unbounded memory.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
from av import AudioFrame

_END: Any = object()


class FrameQueue:
    def __init__(self, name: str = "", limit: int = 0) -> None:
        self.name = name
        self.limit = limit  # 0: unbounded
        self.done = asyncio.Event()  # the reader has seen the end
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ended = False

    def __aiter__(self) -> FrameQueue:
        return self

    async def __anext__(self) -> Any:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # a second reader ends too
            self.done.set()
            raise StopAsyncIteration
        return item

    @property
    def empty(self) -> bool:
        """Every frame read (the end marker stays queued once a reader has seen it)."""
        return self._queue.qsize() <= int(self._ended)

    def push(self, frame: Any) -> None:
        if self.limit and self._queue.qsize() >= self.limit:
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_END)


def pcm_frame(pcm: np.ndarray, rate: int, pts: int) -> AudioFrame:
    """Mono ``int16`` samples as an audio frame whose ``pts`` counts samples at ``rate``."""
    samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1)
    frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts, frame.time_base = pts, _time_base(rate)
    return frame


@lru_cache(maxsize=8)
def _time_base(rate: int) -> Fraction:
    return Fraction(1, rate)
