"""The REMB cap: a constant bitrate once a second, nothing computed per packet."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection

from emostream.stream.transports.webrtc import remb


def test_the_cap_is_announced_once_a_second_for_every_ssrc() -> None:
    cap = remb.RembCap(1_500_000)
    sent = [(t, r) for t in range(0, 2500, 5) if (r := cap.add(t, 0, 1200, 7 + t % 2))]
    assert [t for t, _ in sent] == [0, 1000, 2000]
    assert sent[0][1] == (1_500_000, [7])
    assert sent[1][1] == (1_500_000, [7, 8])  # a second ssrc (rtx, simulcast) joins


def test_cap_remb_replaces_aiortcs_estimator_on_video_receivers_only() -> None:
    """Fails when an aiortc upgrade moves the private estimator: then look again."""

    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no network: nothing sent
        try:
            video = pc.addTransceiver("video", direction="recvonly").receiver
            audio = pc.addTransceiver("audio", direction="recvonly").receiver
            assert remb.cap_remb(video, 800)
            cap = getattr(video, remb._ATTR)
            assert isinstance(cap, remb.RembCap) and cap.bitrate == 800_000
            assert not remb.cap_remb(audio, 800)  # aiortc estimates video only
        finally:
            await pc.close()

    asyncio.run(main())
