"""A call's audio as the session reads it: one track per AudioHook channel.

``external`` is the customer and ``internal`` the agent (Genesys' names: the far end and
our side of the call). A channel whose role the session analyses becomes a track of mono
int16 frames at 8 kHz, named after the channel (the ``track`` of its voice messages);
the session's voice reader resamples it to 16 kHz. A channel whose role is not analysed
is never decoded: its seconds are counted for the call's summary, nothing else.

Media time is the stream's position: samples received per channel over the rate, plus
whatever the client said it discarded (``discarded``, or the audio skipped during a pause
as ``resumed`` reports it), so the frame after a gap carries a ``pts`` that jumps and the
windower starts afresh there.
"""

from __future__ import annotations

import asyncio

from emostream.modalities import MediaTrack
from emostream.modalities.base import Role
from emostream.stream.session import Session
from emostream.stream.transports.audiohook import codec
from emostream.stream.transports.frame_queue import FrameQueue, pcm_frame

ROLES: dict[str, Role] = {"external": "customer", "internal": "agent"}


class CallAudio:
    """The session's tracks for the negotiated channels; ``feed`` each audio frame."""

    def __init__(self, session: Session | None, fmt: codec.Format, channels: list[str]) -> None:
        self.session = session  # None for the connection probe: audio is counted, not read
        self.format = fmt
        self.channels = channels
        self.position = 0  # samples per channel, gaps included
        self.tracks: dict[int, FrameQueue] = {}  # channel index -> its analysed track
        if session is None:
            return
        for index, name in enumerate(channels):
            role = ROLES[name]
            if session.analyses(role):
                track = self.tracks[index] = FrameQueue(name)
                session.add_track(MediaTrack(name, "audio", track, role))

    @property
    def seconds(self) -> float:
        return self.position / codec.RATE

    def feed(self, data: bytes) -> None:
        """One binary message (``ValueError`` when it does not hold whole samples)."""
        n = codec.samples_in(len(data), self.format, len(self.channels))
        if self.session is not None and n:
            if self.tracks:
                pcm = codec.decode(data, self.format, len(self.channels))
                for index, track in self.tracks.items():
                    track.push(pcm_frame(pcm[:, index], codec.RATE, self.position))
            for index, name in enumerate(self.channels):
                if index not in self.tracks:
                    self.session.unanalysed_audio(ROLES[name], name, n / codec.RATE)
        self.position += n

    def gap(self, seconds: float) -> None:
        """Audio the client never sent: time moves on, no samples."""
        self.position += round(seconds * codec.RATE)

    def end(self) -> None:
        for track in self.tracks.values():
            track.end()

    async def ended(self, timeout: float) -> bool:
        """Wait until every track's reader has seen its end (at most ``timeout`` s)."""
        waits = [t.done.wait() for t in self.tracks.values()]
        if not waits:
            return True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)
        except TimeoutError:
            return False
        return True
