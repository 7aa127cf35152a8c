"""One audio track of a session, whatever its transport: frames in, 16 kHz windows out.

Opus (48 kHz) and G.711 (8 kHz) frames arrive every 20 ms on the event loop. Resampling
and windowing (voice activity detection included) are CPU work, so they run in a thread;
frames are gathered into chunks of ``CHUNK_S`` first, so the thread hop happens about five
times a second rather than fifty; a chunk goes early when the media has just passed a
window's end (``Due``), so no window waits for the rest of its chunk. While a chunk is
processed the next one is being received.

Media time runs from the track's first frame (0 s) on the sender's RTP clock; the windower
starts its windows afresh after a gap (a sender's discontinuous transmission, lost packets),
so no window straddles one and window times stay on the sender's clock.

Each window comes back with ``ended``: the ``time.monotonic()`` at which its last sample
arrived (the chunk's arrival time less the media that followed the window's end), which is
where a voice message's latency is measured from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from av.audio.frame import AudioFrame

from emostream import metrics
from emostream.stream.audio import SAMPLE_RATE, Resampler
from emostream.stream.windows import Window, Windower

CHUNK_S = 0.1  # media gathered per thread hop: 5 Opus frames
PAST_END_S = 0.01  # a chunk goes once the media is this far past a window's end
MAX_CHUNKS = 30  # 3 s waiting for the thread: beyond it the oldest chunk goes (a gap)


@dataclass(frozen=True)
class TimedWindow:
    window: Window
    ended: float  # monotonic time its last sample arrived


class AudioWindows:
    """Resampler and windower of one track; ``process`` runs in a worker thread, one call
    at a time (the resampler and windower keep state between chunks)."""

    def __init__(self, windower: Windower) -> None:
        self.windower = windower
        self._resample = Resampler(SAMPLE_RATE)

    def process(self, frames: list[tuple[AudioFrame, float]], arrived: float) -> list[TimedWindow]:
        """A chunk's windows: ``frames`` with their media times (``Due``), the chunk's
        arrival time. Timed as the ``decode`` stage of voice (resample, VAD, windows)."""
        t0 = time.perf_counter()
        windows: list[Window] = []
        end = 0.0
        for frame, t in frames:
            windows += self.windower.push(self._resample(frame), t)
            end = t + frame.samples / (frame.sample_rate or SAMPLE_RATE)
        metrics.STAGE_LATENCY.labels("decode", "voice").observe(time.perf_counter() - t0)
        return [TimedWindow(w, arrived - max(0.0, end - w.end)) for w in windows]

    def finish(self, arrived: float) -> list[TimedWindow]:
        """The track ended: what the resampler held back, then the windower's last window
        over the tail the hops did not reach (so a call's last words are scored too)."""
        tail = self._resample(None)
        windows = self.windower.push(tail) if tail.size else []  # continues the media
        return [TimedWindow(w, arrived) for w in windows + self.windower.flush()]


class Due:
    """A track's media time, and when a chunk should go to the thread: after ``CHUNK_S``
    of media, or as soon as the media has passed the end of the next window (by
    ``PAST_END_S``: the resampler holds a few samples back), so a window is never kept
    waiting for the rest of a chunk.

    Runs on the event loop. Media time: seconds since the track's first frame by the
    sender's timestamps (so a gap is seen as one), by sample count where a frame has none.
    Windows end every hop from one window after the first frame, or after a gap, where
    the windower restarts.
    """

    def __init__(self, windower: Windower) -> None:
        self.window_s = windower.window / windower.rate
        self.hop_s = windower.hop / windower.rate
        self.gap_s = windower.max_gap_s
        self._origin: float | None = None
        self._end = 0.0  # media time after the last frame seen
        self._next = self.window_s  # media time at which the next window ends

    def frame(self, frame: AudioFrame) -> tuple[float, bool]:
        """``frame``'s media time, and whether the chunk holding it should go now."""
        duration = frame.samples / (frame.sample_rate or SAMPLE_RATE)
        start = self._end
        if frame.pts is not None and frame.time_base is not None:
            t = float(frame.pts * frame.time_base)
            self._origin = t if self._origin is None else self._origin
            start = t - self._origin
        if abs(start - self._end) > self.gap_s:  # the windower starts afresh there
            self._next = start + self.window_s
        self._end = start + duration
        if self._end < self._next + PAST_END_S:
            return start, False
        while self._next + PAST_END_S <= self._end:
            self._next += self.hop_s
        return start, True


async def read_windows(
    frames: AsyncIterator[Any],
    windows: AudioWindows,
    on_windows: Callable[[list[TimedWindow]], Awaitable[None]],
    on_frame: Callable[[], None],
    clock: Callable[[], float],
) -> None:
    """Receive a track's ``frames`` until they end; hand each chunk's windows to
    ``on_windows`` as soon as its thread is done (the receiving goes on meanwhile), and at
    the end the last window over the tail. A machine too slow to window
    in real time loses its oldest waiting chunk, never memory: the windows restart after
    the gap, as after lost packets."""
    chunks: asyncio.Queue[tuple[list[tuple[AudioFrame, float]], float] | None] = asyncio.Queue()
    due = Due(windows.windower)

    async def receive() -> None:
        chunk: list[tuple[AudioFrame, float]] = []
        seconds = 0.0
        try:
            async for frame in frames:
                on_frame()
                if not isinstance(frame, AudioFrame):
                    continue
                t, window_ended = due.frame(frame)
                chunk.append((frame, t))
                seconds += frame.samples / (frame.sample_rate or SAMPLE_RATE)
                if window_ended or seconds >= CHUNK_S:
                    if chunks.qsize() >= MAX_CHUNKS:  # the thread cannot keep up
                        chunks.get_nowait()
                    chunks.put_nowait((chunk, clock()))
                    chunk, seconds = [], 0.0
        finally:
            if chunk:  # the last, partial chunk
                chunks.put_nowait((chunk, clock()))
            chunks.put_nowait(None)

    async def process() -> None:
        while (item := await chunks.get()) is not None:
            await on_windows(await asyncio.to_thread(windows.process, *item))
        await on_windows(await asyncio.to_thread(windows.finish, clock()))

    async with asyncio.TaskGroup() as group:
        group.create_task(receive())
        group.create_task(process())
