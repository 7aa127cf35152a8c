"""The REMB a video receiver sends: a fixed cap once a second, not aiortc's estimate.

aiortc runs a delay-based bitrate estimator (``RemoteBitrateEstimator``, pure Python) on
every RTP packet and asks for a REMB RTCP packet on *every* packet while its detector
reads "overusing". A busy server reads packets late, the detector takes the delay for
congestion, and each of the ~7 packets of a frame then costs an SRTCP encryption and a
``sendto`` on the event loop: at 16 streams on 2 cores that was a third of the loop
(py-spy, docs/BENCHMARKS.md). Throttled to one REMB per 200 ms the estimator's own per-packet
bookkeeping (rate windows rebuilt in Python) was still a fifth of the loop.

What an emotion detector needs from a sender is a face at a steady, moderate bitrate, not
all the bandwidth there is. So each video receiver announces ``cap`` (``session.
max_video_kbps``) once a second and computes nothing per packet. A sender takes the
smaller of the REMB and its own loss-based estimate (browsers do), so a congested link is
still backed off by loss; the cap only stops a sender from going above it.

aiortc keeps the estimator in a private attribute; ``cap_remb`` says whether it found it,
and a test fails if an aiortc upgrade renames it.
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver

INTERVAL_MS = 1000  # how often the cap is repeated (senders time a REMB out after a while)
_ATTR = "_RTCRtpReceiver__remote_bitrate_estimator"

Remb = tuple[int, list[int]]  # (bitrate in bit/s, ssrcs), as aiortc's estimator returns it


class RembCap:
    """Stands in for aiortc's estimator: the same ``add``, a constant answer."""

    def __init__(self, bitrate: int, interval_ms: int = INTERVAL_MS) -> None:
        self.bitrate = bitrate
        self.interval_ms = interval_ms
        self._last_ms: int | None = None
        self._ssrcs: set[int] = set()

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> Remb | None:
        self._ssrcs.add(ssrc)
        if self._last_ms is not None and arrival_time_ms - self._last_ms < self.interval_ms:
            return None
        self._last_ms = arrival_time_ms
        return self.bitrate, sorted(self._ssrcs)


def cap_remb(receiver: RTCRtpReceiver, kbps: int) -> bool:
    """Make ``receiver`` announce ``kbps``; False when it has no estimator (audio) or
    aiortc no longer keeps one where we look."""
    if getattr(receiver, _ATTR, None) is None:
        return False
    setattr(receiver, _ATTR, RembCap(kbps * 1000))
    return True
