"""At most one REMB (receiver bitrate estimate) per video receiver every 200 ms.

aiortc's ``RemoteBitrateEstimator`` asks for a REMB RTCP packet on *every* RTP packet
while its delay detector reads "overusing". A busy server reads packets late, the detector
sees the growing delay as congestion, and each of the many packets per frame then costs an
SRTCP encryption and a ``sendto`` on the event loop: at 16 streams on 2 cores that was a
third of the loop (py-spy, docs/BENCHMARKS.md), which made the server later still.
libwebrtc's ``RembThrottler`` sends at most one REMB per 200 ms; this does the same by
wrapping each receiver's estimator, so the estimate itself is unchanged and senders still
get it five times a second.

aiortc keeps the estimator in a private attribute; ``throttle`` says whether it found it,
and a test fails if an aiortc upgrade renames it.
"""

from __future__ import annotations

from typing import Protocol

from aiortc import RTCRtpReceiver

INTERVAL_MS = 200  # libwebrtc's kRembSendIntervalMs
_ATTR = "_RTCRtpReceiver__remote_bitrate_estimator"

Remb = tuple[int, list[int]]  # (bitrate, ssrcs), as aiortc's estimator returns it


class Estimator(Protocol):
    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> Remb | None: ...


class ThrottledEstimator:
    """aiortc's estimator, fed every packet, letting a REMB out at most every interval."""

    def __init__(self, inner: Estimator, interval_ms: int = INTERVAL_MS) -> None:
        self.inner = inner
        self.interval_ms = interval_ms
        self._last_ms: int | None = None

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> Remb | None:
        remb = self.inner.add(
            arrival_time_ms=arrival_time_ms,
            abs_send_time=abs_send_time,
            payload_size=payload_size,
            ssrc=ssrc,
        )
        if remb is None:
            return None
        if self._last_ms is not None and arrival_time_ms - self._last_ms < self.interval_ms:
            return None
        self._last_ms = arrival_time_ms
        return remb


def throttle(receiver: RTCRtpReceiver) -> bool:
    """Throttle the receiver's REMBs; False when it has no estimator (audio) or aiortc
    no longer keeps one where we look."""
    inner = getattr(receiver, _ATTR, None)
    if inner is None:
        return False
    if not isinstance(inner, ThrottledEstimator):
        setattr(receiver, _ATTR, ThrottledEstimator(inner))
    return True
