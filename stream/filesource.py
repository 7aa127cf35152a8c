"""One stream of a media file as a WebRTC track, played at its own rate, over and over.

aiortc's ``MediaPlayer(loop=True)`` seeks back at the end of the file, but a decoder that
holds frames back (H.264 with B-frames, as in most MP4s) has been drained by then and
answers the next packet with EOF, so playback stops after one pass. Here each pass opens
the file afresh (new demuxer, new decoder), and timestamps carry on from the pass before,
so the receiver sees one continuous stream.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from collections.abc import Iterator
from typing import Literal

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.container import InputContainer
from av.video.frame import VideoFrame

VIDEO_CLOCK = 90_000
Kind = Literal["audio", "video"]


def kinds_in(path: str) -> list[Kind]:
    """Which of audio and video the file holds."""
    with av.open(path) as c:
        out: list[Kind] = []
        if c.streams.video:
            out.append("video")
        if c.streams.audio:
            out.append("audio")
        return out


AUDIO_RATE, AUDIO_FRAME = 48_000, 960  # 20 ms, as aiortc's own MediaPlayer sends


def _as_sendable(frames: Iterator[object]) -> Iterator[AudioFrame]:
    """Decoded audio as aiortc's encoders take it (they refuse a file's "1 channels"
    layout): s16 stereo at 48 kHz in 20 ms frames, as ``MediaPlayer`` does."""
    resampler = AudioResampler(
        format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_FRAME
    )
    for frame in frames:
        if isinstance(frame, AudioFrame):
            yield from resampler.resample(frame)
    yield from resampler.resample(None)


class LoopingFileTrack(MediaStreamTrack):
    def __init__(self, path: str, kind: Kind) -> None:
        super().__init__()
        self.kind = kind
        self.path = path
        self.passes = 0  # files opened so far
        self._lock = threading.Lock()  # decoding runs in a worker thread; stop() closes
        self._container: InputContainer | None = None
        self._frames: Iterator[AudioFrame | VideoFrame] | None = None
        self._offset = 0.0  # media seconds of the passes before this one
        self._first: float | None = None  # time of this pass's first frame
        self._last = 0.0  # media time of the last frame, from the pass start
        self._step = 0.0  # duration of the last frame
        self._clock: float | None = None  # monotonic time of media time 0

    def _open(self) -> None:
        container = av.open(self.path)
        streams = container.streams.video if self.kind == "video" else container.streams.audio
        if not streams:
            container.close()
            raise MediaStreamError(f"{self.path}: no {self.kind} stream")
        self._container = container
        decoded: Iterator[object] = container.decode(streams[0])
        if self.kind == "audio":  # what aiortc's encoders take: s16, mono/stereo, 20 ms
            decoded = _as_sendable(decoded)
        self._frames = (
            f for f in decoded if isinstance(f, AudioFrame | VideoFrame) and f.time is not None
        )
        self._first = None
        rate = getattr(streams[0], "average_rate", None)  # a one-frame file still paces
        self._step = 1.0 / float(rate) if rate else 1.0 / 25
        self.passes += 1

    def _end_pass(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = None
        self._offset += self._last + self._step
        self._last = self._step = 0.0

    def _next(self) -> tuple[AudioFrame | VideoFrame, float]:
        """The next frame and its media time (runs in a worker thread)."""
        with self._lock:
            for _ in range(2):  # this pass, else a fresh one
                if self.readyState != "live":
                    raise MediaStreamError
                if self._frames is None:
                    self._open()
                assert self._frames is not None
                frame = next(self._frames, None)
                if frame is None:
                    self._end_pass()
                    continue
                t = float(frame.time or 0.0)
                self._first = t if self._first is None else self._first
                t -= self._first
                if isinstance(frame, AudioFrame):
                    self._step = frame.samples / frame.sample_rate
                elif t > self._last:
                    self._step = t - self._last
                self._last = t
                return frame, self._offset + t
            raise MediaStreamError(f"{self.path}: no {self.kind} frames")

    async def recv(self) -> AudioFrame | VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame, media_time = await asyncio.to_thread(self._next)
        if isinstance(frame, AudioFrame):
            frame.pts = round(media_time * frame.sample_rate)
            frame.time_base = fractions.Fraction(1, frame.sample_rate)
        else:
            frame.pts = round(media_time * VIDEO_CLOCK)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        now = time.monotonic()
        if self._clock is None:
            self._clock = now - media_time
        wait = self._clock + media_time - now
        if wait > 0:
            await asyncio.sleep(wait)
        return frame

    def stop(self) -> None:
        super().stop()
        with self._lock:
            if self._container is not None:
                self._container.close()
            self._container = self._frames = None
