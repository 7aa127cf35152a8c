"""One audio track of a session, whatever its transport: frames in, 16 kHz windows out.

Opus (48 kHz) and G.711 (8 kHz) frames arrive every 20 ms on the event loop. Resampling
and windowing (voice activity detection included) are CPU work, so they run in a thread;
frames are gathered into chunks of ``CHUNK_S`` first, so the thread hop happens about five
times a second rather than fifty; a chunk goes early when the media has just passed a
window's end (``Due``), so no window waits for the rest of its chunk. While a chunk is
processed the next one is being received.

Every track of a process that shares a VAD shares one thread hop (``ChunkBatches``): the
chunks that arrive while one batch is in the thread go together as the next, and the VAD
runs over all of them at once (Silero in batches across tracks: a third of its cost per
track at 50 calls), so a busy server makes fewer, larger hops rather than more.

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
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from av.audio.frame import AudioFrame

from emostream import metrics
from emostream.models.vad.base import Vad
from emostream.stream.audio import SAMPLE_RATE, Resampler
from emostream.stream.windows import Window, Windower

CHUNK_S = 0.1  # media gathered per thread hop: 5 Opus frames
PAST_END_S = 0.01  # a chunk goes once the media is this far past a window's end
MAX_CHUNKS = 30  # 3 s waiting for the thread: beyond it the oldest chunk goes (a gap)


@dataclass(frozen=True)
class TimedWindow:
    window: Window
    ended: float  # monotonic time its last sample arrived


Chunk = list[tuple[AudioFrame, float]]  # frames with their media times (``Due``)


class AudioWindows:
    """Resampler and windower of one track; its chunks are windowed in a worker thread,
    one at a time (the resampler and windower keep state between chunks)."""

    def __init__(self, windower: Windower) -> None:
        self.windower = windower
        self._resample = Resampler(SAMPLE_RATE)

    def process(self, frames: Chunk, arrived: float) -> list[TimedWindow]:
        """A chunk's windows: ``frames`` with their media times, the chunk's arrival
        time. This track alone; ``ChunkBatches`` windows many tracks' chunks together."""
        result = window_chunks(self.windower.vad, [(self, frames, arrived)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def runs(self, frames: Chunk) -> list[tuple[np.ndarray, float]]:
        """A chunk as 16 kHz runs with their media times: frames that follow each other
        in one format are resampled as one (one call, not five, for 20 ms frames)."""
        out: list[tuple[np.ndarray, float]] = []
        for group in _contiguous(frames):
            out.append((self._resample(_joined([f for f, _ in group])), group[0][1]))
        return out

    def finish(self, arrived: float) -> list[TimedWindow]:
        """The track ended: what the resampler held back, then the windower's last window
        over the tail the hops did not reach (so a call's last words are scored too)."""
        tail = self._resample(None)
        windows = self.windower.push(tail) if tail.size else []  # continues the media
        return [TimedWindow(w, arrived) for w in windows + self.windower.flush()]


def _contiguous(frames: Chunk) -> list[Chunk]:
    """``frames`` split where the media jumps or the format changes."""
    groups: list[Chunk] = []
    end = None
    for frame, t in frames:
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if groups and end is not None and end[0] == shape and abs(end[1] - t) < 1e-3:
            groups[-1].append((frame, t))
        else:
            groups.append([(frame, t)])
        end = (shape, t + frame.samples / (frame.sample_rate or SAMPLE_RATE))
    return groups


def _joined(frames: list[AudioFrame]) -> AudioFrame:
    """Consecutive frames of one format as one frame (the first's time)."""
    if len(frames) == 1:
        return frames[0]
    first = frames[0]
    data = np.concatenate([f.to_ndarray() for f in frames], axis=1)  # packed or planar
    joined = AudioFrame.from_ndarray(data, format=first.format.name, layout=first.layout.name)
    joined.sample_rate = first.sample_rate
    joined.pts, joined.time_base = first.pts, first.time_base
    return joined


def window_chunks(
    vad: Vad, chunks: Sequence[tuple[AudioWindows, Chunk, float]]
) -> list[list[TimedWindow] | Exception]:
    """Several tracks' chunks (each track at most once) -> each one's windows, or the
    exception that its audio raised (the others go on). The VAD runs over every track's
    frames at once, one run of each chunk at a time (a gap inside a chunk starts a run).
    Timed as the ``decode`` stage of voice (resample, VAD, windows)."""
    t0 = time.perf_counter()
    out: list[list[TimedWindow] | Exception] = []
    runs: list[list[tuple[np.ndarray, float]]] = []
    windows: list[list[Window]] = [[] for _ in chunks]
    for track, frames, _ in chunks:
        try:
            runs.append(track.runs(frames))
            out.append([])
        except Exception as exc:  # this track's audio only
            runs.append([])
            out.append(exc)
    for r in range(max((len(x) for x in runs), default=0)):
        active = [i for i, x in enumerate(runs) if len(x) > r and not isinstance(out[i], Exception)]
        windowers = [chunks[i][0].windower for i in active]
        fed = [w.feed(*runs[i][r]) for w, i in zip(windowers, active, strict=True)]
        probs = vad.run([(w.stream, f) for w, f in zip(windowers, fed, strict=True)])
        for i, w, p in zip(active, windowers, probs, strict=True):
            windows[i] += w.take(p)
    elapsed = time.perf_counter() - t0
    for i, (_, frames, arrived) in enumerate(chunks):
        result = out[i]
        if isinstance(result, Exception) or not frames:
            continue
        metrics.STAGE_LATENCY.labels("decode", "voice").observe(elapsed)
        last, t = frames[-1]
        end = t + last.samples / (last.sample_rate or SAMPLE_RATE)
        result += [TimedWindow(w, arrived - max(0.0, end - w.end)) for w in windows[i]]
    return out


class ChunkBatches:
    """The thread hop that every track of a process shares, one per VAD: chunks that
    arrive while a batch is in the thread wait, then go together (``window_chunks``).
    Runs on the event loop; one drain task per loop, started when a chunk arrives."""

    def __init__(self, vad: Vad) -> None:
        self.vad = vad
        self._waiting: list[tuple[AudioWindows, Chunk, float, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def process(
        self, windows: AudioWindows, frames: Chunk, arrived: float
    ) -> list[TimedWindow]:
        """This track's chunk's windows, when its batch is done."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[TimedWindow]] = loop.create_future()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._waiting = []  # futures of a loop that is gone
            self._task = loop.create_task(self._drain())
        self._waiting.append((windows, frames, arrived, done))
        return await done

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # the chunks of this loop turn join the first batch
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = await asyncio.to_thread(
                    window_chunks, self.vad, [(w, f, a) for w, f, a, _ in batch]
                )
            except Exception as exc:  # the VAD itself: every chunk says so
                results = [exc] * len(batch)
            for (*_, done), result in zip(batch, results, strict=True):
                if done.done():  # its track was cancelled meanwhile
                    continue
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)


_BATCHES: weakref.WeakKeyDictionary[Any, ChunkBatches] = weakref.WeakKeyDictionary()


def chunk_batches(vad: Vad) -> ChunkBatches:
    """The process's ``ChunkBatches`` for ``vad`` (one per VAD: its tracks batch together)."""
    batches = _BATCHES.get(vad)
    if batches is None:
        batches = _BATCHES[vad] = ChunkBatches(vad)
    return batches


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

    batches = chunk_batches(windows.windower.vad)

    async def process() -> None:
        while (item := await chunks.get()) is not None:
            await on_windows(await batches.process(windows, *item))
        await on_windows(await asyncio.to_thread(windows.finish, clock()))

    async with asyncio.TaskGroup() as group:
        group.create_task(receive())
        group.create_task(process())
