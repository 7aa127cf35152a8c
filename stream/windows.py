"""Audio windowing: 16 kHz samples in, fixed windows every hop out, each marked speech or not.

One ``Windower`` per audio track, live (a session pushes each decoded chunk) or offline
(``file_windows`` pushes a whole file): one code path, so a call and ``emostream
analyze`` of its recording give the same windows. The VAD runs on every sample as it
arrives (its own frame size, its own state per track); a window is ``speech`` when at
least ``min_speech`` of its VAD frames are voiced. Memory is bounded: the last window of
samples, the flags of its VAD frames and less than one VAD frame of remainder.

Media time: the first push anchors the track (its ``time``, else 0); later samples follow
by count. A push whose time jumps more than ``max_gap_s`` from where the samples say the
track is (a gap in the stream, a seek) starts over from that time, so a window never
straddles a gap. Sync and cheap: a session calls it from a thread, off the event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from emostream.models.card import AudioInput
from emostream.models.vad.base import Vad, VadStream

if TYPE_CHECKING:
    from emostream.models.voice import VoiceModelConfig


@dataclass(frozen=True)
class Window:
    """``samples`` (window length, float32 at 16 kHz) spanning media ``[start, end)`` s."""

    samples: np.ndarray
    start: float
    end: float
    speech: bool
    voiced: float  # share of the window's VAD frames that were voiced


class Windower:
    """One track's windows: ``push`` chunks, collect the windows each push completes."""

    def __init__(
        self,
        vad: Vad,
        window_samples: int,
        hop_samples: int,
        *,
        min_speech: float = 0.3,
        max_gap_s: float = 0.25,
        sample_rate: int = 16000,
    ) -> None:
        if window_samples < 1 or not 0 < hop_samples <= window_samples:
            raise ValueError(f"window {window_samples} / hop {hop_samples} samples")
        self.vad = vad
        self.window = window_samples
        self.hop = hop_samples
        self.min_speech = min_speech
        self.max_gap_s = max_gap_s
        self.rate = sample_rate
        self._frame = vad.frame_samples
        self._reset(None)

    @classmethod
    def for_model(cls, vad: Vad, spec: AudioInput | None, config: VoiceModelConfig) -> Windower:
        """Windows of the voice card's size and hop (the defaults when no model is loaded)."""
        if spec is None:
            spec = AudioInput(name="")  # the card's defaults
        return cls(
            vad,
            spec.window_samples,
            spec.hop_samples,
            min_speech=config.min_speech,
            max_gap_s=config.max_gap_s,
            sample_rate=spec.sample_rate,
        )

    def _reset(self, start: float | None) -> None:
        self.stream: VadStream = self.vad.stream()  # this run's VAD state
        self._t0 = start  # media time of sample 0 of this run
        self._total = 0  # samples pushed in this run
        self._buf = np.zeros(0, np.float32)  # the last <= window samples
        self._pending = np.zeros(0, np.float32)  # < one VAD frame not yet run
        self._fed = np.zeros(0, np.float32)  # samples fed, not yet taken into windows
        self._flags: deque[bool] = deque()  # VAD flags from the oldest a window still needs
        self._vad_frames = 0  # VAD frames run in this run
        self._next_end = self.window  # sample count at which the next window ends
        self._emitted = 0

    @property
    def held_samples(self) -> int:
        """Samples held now (for the memory bound: at most a window plus one VAD frame)."""
        return len(self._buf) + len(self._pending)

    def push(self, samples: np.ndarray, time: float | None = None) -> list[Window]:
        """Add a chunk (float32 mono at 16 kHz; ``time``: media seconds of its first sample)."""
        return self.take(self.stream(self.feed(samples, time)))

    def feed(self, samples: np.ndarray, time: float | None = None) -> np.ndarray:
        """The first half of ``push``: hold a chunk and answer the whole VAD frames it
        completes, (k, frame_samples), to be run on ``stream`` (after this call: a gap
        starts a new one) and handed to ``take``. Split so that one thread can run the
        VAD of many tracks' chunks as one batch (``models/vad/base.py``)."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if self._t0 is None:
            self._t0 = 0.0 if time is None else float(time)
        elif time is not None and abs(time - self._now()) > self.max_gap_s:
            self._reset(float(time))
        self._fed = x
        run = np.concatenate([self._pending, x])
        whole = len(run) // self._frame * self._frame
        self._pending = run[whole:].copy()
        return run[:whole].reshape(-1, self._frame)

    def take(self, probs: np.ndarray) -> list[Window]:
        """The second half of ``push``: the VAD's answer for ``feed``'s frames in, the
        windows the fed chunk completes out."""
        self._flag(probs)
        x, self._fed = self._fed, np.zeros(0, np.float32)
        out: list[Window] = []
        while len(x):  # up to the next window end at a time: a window sees its own samples
            take = min(len(x), self._next_end - self._total)
            self._total += take
            self._buf = np.concatenate([self._buf, x[:take]])[-self.window :]
            x = x[take:]
            if self._total == self._next_end:
                out.append(self._emit(self._total - self.window, self._total))
                self._next_end += self.hop
        first = max(0, self._total - self.window) // self._frame  # flush's window, the earliest
        while self._vad_frames - len(self._flags) < first and self._flags:
            self._flags.popleft()
        return out

    def flush(self) -> list[Window]:
        """The end of the track: a last window over the tail the hops did not reach.

        A track shorter than one window gives one window of what there is, zero-padded;
        otherwise, if samples arrived since the last window ended, one more window ends at
        the last sample (it overlaps the previous one by more than a hop).
        """
        last_end = self._next_end - self.hop
        if self._total == 0 or (self._emitted and self._total <= last_end):
            return []
        partial = self._pending.size > 0
        if partial:  # the VAD's partial last frame, zero-padded
            pad = np.zeros(self._frame - len(self._pending), np.float32)
            self._flag(self.stream(np.concatenate([self._pending, pad])[None, :]))
            self._pending = np.zeros(0, np.float32)
        return [self._emit(max(0, self._total - self.window), self._total, partial)]

    # -- inside --------------------------------------------------------------------------
    def _now(self) -> float:
        return (self._t0 or 0.0) + (self._total + len(self._fed)) / self.rate

    def _flag(self, probs: np.ndarray) -> None:
        """The VAD's probabilities for the next frames, kept as speech flags."""
        self._flags.extend(bool(p >= self.vad.threshold) for p in probs)
        self._vad_frames += len(probs)

    def _emit(self, first: int, last: int, partial: bool = False) -> Window:
        """The window of samples [first, last) of this run: voiced by the VAD frames inside
        it (``partial``: and the zero-padded frame over its end, at the track's end)."""
        lo = first // self._frame
        hi = min(self._vad_frames, -(-last // self._frame) if partial else last // self._frame)
        base = self._vad_frames - len(self._flags)  # index of the oldest flag kept
        have = list(self._flags)[max(0, lo - base) : max(0, hi - base)]
        voiced = sum(have) / len(have) if have else 0.0
        samples = self._buf[-(last - first) :]
        if len(samples) < self.window:
            samples = np.pad(samples, (0, self.window - len(samples)))
        t0 = self._t0 or 0.0
        self._emitted += 1
        return Window(
            samples=samples.copy(),
            start=t0 + first / self.rate,
            end=t0 + last / self.rate,
            speech=voiced >= self.min_speech,
            voiced=voiced,
        )


def file_windows(samples: np.ndarray, windower: Windower, chunk: int = 16000) -> Iterator[Window]:
    """A whole recording's windows, pushed in chunks as a live track would be, then flushed."""
    x = np.asarray(samples, np.float32).reshape(-1)
    for i in range(0, len(x), chunk):
        yield from windower.push(x[i : i + chunk], None if i else 0.0)
    yield from windower.flush()
