"""The in-process transport: frames and PCM handed to a session by Python code.

What the WebRTC transport does with a peer connection, done with plain objects: a session
is opened through the ``SessionManager`` and gets tracks whose frames are pushed here
(BGR images, or mono PCM at any rate), so everything downstream (conversion, windows,
VAD, the broker, results, SSE, limits, the idle timeout, metrics) runs exactly as for a
call. Tests use it wherever they need a session but not WebRTC; an application embedding
emostream can use it to feed media it already has.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from av import VideoFrame

from emostream.modalities import MediaTrack
from emostream.modalities.base import Role, TrackKind
from emostream.stream.session import Session
from emostream.stream.session_manager import SessionManager
from emostream.stream.transports.frame_queue import FrameQueue, pcm_frame


class LocalTrack(FrameQueue):
    """A track fed by ``push_*``; ``end()`` ends it as a hang-up would."""

    def __init__(self, name: str, kind: TrackKind, role: Role = "unknown") -> None:
        super().__init__(name)
        self.kind, self.role = kind, role
        self._samples = 0

    def push_image(self, bgr: np.ndarray, pts: float) -> None:
        """One video frame (``uint8`` BGR) at media time ``pts`` seconds."""
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame.pts, frame.time_base = round(pts * 90000), Fraction(1, 90000)
        self.push(frame)

    def push_pcm(self, samples: np.ndarray, rate: int) -> None:
        """Mono ``int16`` PCM at ``rate`` Hz, following the previous chunk in media time."""
        self.push(pcm_frame(samples, rate, self._samples))
        self._samples += np.asarray(samples).size


async def open_local(manager: SessionManager, owner: bytes | None = None) -> Session:
    """A new session with no tracks yet (add them with :func:`add_track`)."""
    return await manager.open(owner, transport="local")


def add_track(session: Session, name: str, kind: TrackKind, role: Role = "unknown") -> LocalTrack:
    """A new track of ``session``, read by the modality of its kind from now on."""
    track = LocalTrack(name, kind, role)
    session.add_track(MediaTrack(name, kind, track, role))
    return track
