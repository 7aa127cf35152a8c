"""REMB throttling: aiortc's estimator still sees every packet, senders hear at most 5/s."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection

from emostream.stream import remb


class Always:
    """An estimator that asks for a REMB on every packet, as aiortc's does when overusing."""

    def __init__(self) -> None:
        self.packets = 0

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> remb.Remb | None:
        self.packets += 1
        return 500_000, [ssrc]


def test_at_most_one_remb_per_interval_and_every_packet_counted() -> None:
    inner = Always()
    throttled = remb.ThrottledEstimator(inner)
    sent = [t for t in range(0, 1000, 5) if throttled.add(t, 0, 1200, 7) is not None]
    assert inner.packets == 200
    assert sent == [0, 200, 400, 600, 800]


def test_quiet_estimates_pass_through_untouched() -> None:
    class Never(Always):
        def add(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            return None

    assert remb.ThrottledEstimator(Never()).add(0, 0, 1200, 7) is None


def test_throttle_finds_aiortcs_estimator_on_video_receivers_only() -> None:
    """Fails when an aiortc upgrade moves the private estimator: then look again."""

    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no network: nothing sent
        try:
            video = pc.addTransceiver("video", direction="recvonly").receiver
            audio = pc.addTransceiver("audio", direction="recvonly").receiver
            assert remb.throttle(video)
            assert isinstance(getattr(video, remb._ATTR), remb.ThrottledEstimator)
            assert remb.throttle(video)  # twice is once
            inner = getattr(video, remb._ATTR).inner
            assert not isinstance(inner, remb.ThrottledEstimator)
            assert not remb.throttle(audio)  # aiortc estimates video only
        finally:
            await pc.close()

    asyncio.run(main())
