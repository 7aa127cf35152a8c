"""A session's results leave in ``seq`` order, whatever the broker and however many workers.

With several workers (or processes) a newer frame's scores can come back before an older
one's; sent as they come, the client and the face tracker would see frames out of order.
Real time beats completeness here as everywhere: a scored outcome whose ``seq`` is not
above the highest one already sent for its stream is dropped as ``out_of_order`` (counted
like any drop, in ``emostream_frames_dropped_total`` and the session's own tally). Nothing
is held back to wait for an older one.

A stream is a modality, except that every audio track is its own stream: the voice
windows of all the session's tracks share one ``seq`` counter (``Session.next_seq`` is per
modality), so one track's window must never make another track's older one look late.
Dropped and failed outcomes send no message, so they neither move the mark nor are judged
by it (a failed one is already counted as ``error``).
"""

from __future__ import annotations

from emostream.pipeline.jobs import DropReason, Job, Modality, VoiceInfo
from emostream.pipeline.outcomes import Scored, SessionEvent, drop

Stream = tuple[Modality, str]


def stream_of(job: Job) -> Stream:
    """The ordered stream a job belongs to: its modality, and its track for voice."""
    return job.modality, job.info.track if isinstance(job.info, VoiceInfo) else ""


class InOrder:
    """The highest ``seq`` sent per stream of one session."""

    def __init__(self) -> None:
        self._sent: dict[Stream, int] = {}

    def admit(self, event: SessionEvent) -> SessionEvent:
        """The event itself, or, for a scored one that comes too late, its drop (counted)."""
        if not isinstance(event, Scored):
            return event
        stream = stream_of(event.job)
        if event.job.seq <= self._sent.get(stream, 0):  # seqs start at 1
            return drop(event.job, DropReason.out_of_order)
        self._sent[stream] = event.job.seq
        return event
