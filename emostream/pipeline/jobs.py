"""A job: one unit of inference work (a decoded, downscaled frame; for voice, an audio window)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

import numpy as np

Modality = str  # a registered modality's name (``emostream.modalities``)
Box = tuple[int, int, int, int]  # x, y, w, h in pixels
NO_PAYLOAD = np.empty((0,), np.uint8)


class DropReason(StrEnum):
    """Why a job produced no scores (the ``reason`` label of frames dropped)."""

    superseded = "superseded"  # a newer frame of the same session replaced it
    deadline = "deadline"  # too old when a worker got to it
    session_closed = "session_closed"  # the session ended before it ran
    error = "error"  # the worker failed on it (bad payload); the session lives on
    overload = "overload"  # the broker refused it (queue full across sessions)
    malformed = "malformed"  # a job on the stream that no worker can read (acked, not run)
    unavailable = "unavailable"  # the broker (Redis) was unreachable when it was submitted
    lost = "lost"  # no worker answered long after its deadline (stream trimmed or wiped)
    out_of_order = "out_of_order"  # scored after a newer one of its stream was sent


@dataclass(frozen=True)
class FrameInfo:
    """What a face job knows about its frame besides the pixels.

    ``scale`` is payload pixels per source pixel (the frame was downscaled once on
    arrival), so boxes found on the payload go back to source pixels as ``box / scale``.
    ``detect`` False means the whole frame is one aligned face (``--no-detect``).
    A scale of 0, NaN or above 1 (or a size below 1 px) is refused here, where the frame
    info is made, so it can never reach a batch and break the other jobs in it.
    """

    modality: ClassVar[Modality] = "face"
    width: int
    height: int
    scale: float = 1.0
    detect: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and 0 < self.scale <= 1):
            raise ValueError(f"frame scale {self.scale} is not in (0, 1]")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size {self.width}x{self.height} is not at least 1x1")


@dataclass(frozen=True)
class VoiceInfo:
    """What a voice job knows about its window besides the samples.

    The payload is the window itself: float32 mono samples in [-1, 1] at ``sample_rate``.
    ``track`` names the session's audio track it came from (a call may carry agent and
    customer as two); ``start`` and ``end`` are media seconds of that track.
    """

    modality: ClassVar[Modality] = "voice"
    track: str
    start: float
    end: float
    sample_rate: int = 16000
    role: str = "unknown"  # the speaker's role on this track: customer, agent, unknown

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end) and self.end > self.start):
            raise ValueError(f"voice window [{self.start}, {self.end}] is not a time span")
        if self.sample_rate < 1:
            raise ValueError(f"sample rate {self.sample_rate} is not positive")


@dataclass
class Job:
    """A payload plus what is needed to route it, time it and drop it when it is too old.

    Times are ``time.monotonic()`` of the process holding the job (the Redis wire converts
    them at its edge). ``deadline`` is infinite until a broker stamps it, so a job handed
    straight to an analyzer (``/v1/predict``) is never dropped as late.
    """

    session: str
    seq: int
    pts: float | None
    payload: np.ndarray
    info: FrameInfo | VoiceInfo
    created: float = field(default_factory=time.monotonic)  # when decode started
    deadline: float = math.inf
    enqueued: float = 0.0  # when a broker queued it; 0 = created
    reply_to: str = ""  # where its outcome goes (Redis: the ingest node's stream)
    token: str = ""  # the broker's handle for acknowledging it (a stream entry id)

    def __post_init__(self) -> None:
        if not self.enqueued:
            self.enqueued = self.created

    @property
    def modality(self) -> Modality:
        return self.info.modality

    @property
    def frame(self) -> FrameInfo:
        """The frame info of a face job (a voice job here is a routing bug: TypeError)."""
        if not isinstance(self.info, FrameInfo):
            raise TypeError(f"job {self.session}/{self.seq} is a {self.modality} job")
        return self.info

    @property
    def window(self) -> VoiceInfo:
        """The window info of a voice job (a face job here is a routing bug: TypeError)."""
        if not isinstance(self.info, VoiceInfo):
            raise TypeError(f"job {self.session}/{self.seq} is a {self.modality} job")
        return self.info

    @property
    def key(self) -> tuple[str, int]:
        return self.session, self.seq

    def header(self) -> Job:
        """This job without its payload: what an outcome keeps, so no frame outlives its run."""
        return dataclasses.replace(self, payload=NO_PAYLOAD)
