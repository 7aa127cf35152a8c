"""The WebRTC test harness itself: two aiortc peers in one process, inside the namespace.

Runs only inside the private network namespace (see conftest.py). Timeouts here are
generous guards against a peer that never connects, never measurements.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json

import numpy as np
from aioice.ice import get_host_addresses
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import VideoStreamTrack
from av import VideoFrame

from emostream.bench import netns

CONNECT_TIMEOUT_S = 30.0
NAMESPACE = ipaddress.ip_network(netns.DEFAULT_ADDR, strict=False)
WIDTH, HEIGHT = 640, 480
FRAMES_WANTED = 10


class SyntheticVideoTrack(VideoStreamTrack):
    """640x480 frames of a moving bar over a gradient, paced by aiortc's 30 fps clock."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        super().__init__()
        self.width, self.height = width, height
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        self._background = np.repeat(np.tile(ramp, (height, 1))[:, :, None], 3, axis=2)
        self.sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self._background.copy()
        x = (self.sent * 16) % (self.width - 32)
        image[:, x : x + 32] = (0, 0, 255)
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        self.sent += 1
        return frame


def candidate_addresses(sdp: str) -> list[tuple[str, str]]:
    """``(address, type)`` of every ``a=candidate`` line of an SDP (RFC 8839 syntax)."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            # a=candidate:<foundation> <component> <transport> <priority> <address> <port>
            #   typ <type> ...
            fields = line.split()
            found.append((fields[4], fields[fields.index("typ") + 1]))
    return found


async def gathered(pc: RTCPeerConnection) -> RTCSessionDescription:
    """The local description once ICE gathering is complete (aiortc does not trickle)."""
    if pc.iceGatheringState != "complete":
        done = asyncio.get_running_loop().create_future()

        @pc.on("icegatheringstatechange")
        def _changed() -> None:
            if pc.iceGatheringState == "complete" and not done.done():
                done.set_result(None)

        if pc.iceGatheringState != "complete":
            await asyncio.wait_for(done, CONNECT_TIMEOUT_S)
    description = pc.localDescription
    assert description is not None
    return description


def assert_private_candidates(sdp: str) -> list[tuple[str, str]]:
    candidates = candidate_addresses(sdp)
    assert candidates, f"no ICE candidate gathered:\n{sdp}"
    outside = [c for c in candidates if ipaddress.ip_address(c[0]) not in NAMESPACE]
    assert not outside, f"candidates outside {NAMESPACE}: {outside}"
    assert {kind for _, kind in candidates} == {"host"}, candidates
    return candidates


def test_namespace_has_no_way_out(netns_ip: str) -> None:
    """The ground the other tests stand on: what aiortc can see and reach from here."""
    assert netns_ip == str(ipaddress.ip_interface(netns.DEFAULT_ADDR).ip)
    assert not netns.has_default_route()
    # UDP connect() only picks a route (no packet is sent): there must be none.
    assert netns.udp_route_errno("8.8.8.8") == errno.ENETUNREACH
    assert netns.udp_route_errno("2001:4860:4860::8888") in (
        errno.ENETUNREACH,
        errno.EAFNOSUPPORT,
        errno.EADDRNOTAVAIL,
    )
    # aioice gathers host candidates on exactly these addresses.
    assert get_host_addresses(use_ipv4=True, use_ipv6=True) == [netns_ip]


def test_default_configuration_has_no_stun(rtc_configuration: RTCConfiguration) -> None:
    assert rtc_configuration.iceServers == []


async def test_two_peers_video_and_data_channel(
    netns_ip: str, rtc_configuration: RTCConfiguration
) -> None:
    offerer = RTCPeerConnection(rtc_configuration)
    answerer = RTCPeerConnection(rtc_configuration)
    loop = asyncio.get_running_loop()
    frames_done: asyncio.Future[list[VideoFrame]] = loop.create_future()
    reply: asyncio.Future[dict[str, object]] = loop.create_future()
    connected = {pc: loop.create_future() for pc in (offerer, answerer)}
    consumers: list[asyncio.Task[None]] = []

    def watch(pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        def _state() -> None:
            fut = connected[pc]
            if fut.done():
                return
            if pc.connectionState == "connected":
                fut.set_result(None)
            elif pc.connectionState in ("failed", "closed"):
                fut.set_exception(AssertionError(f"connection {pc.connectionState}"))

    watch(offerer)
    watch(answerer)

    async def consume(track: MediaStreamTrack) -> None:
        frames: list[VideoFrame] = []
        while len(frames) < FRAMES_WANTED:
            frame = await track.recv()
            assert isinstance(frame, VideoFrame)
            frames.append(frame)
        if not frames_done.done():
            frames_done.set_result(frames)

    @answerer.on("track")
    def _track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            consumers.append(asyncio.ensure_future(consume(track)))

    @answerer.on("datachannel")
    def _channel(channel: RTCDataChannel) -> None:
        assert channel.label == "emotions"

        @channel.on("message")
        def _message(message: str | bytes) -> None:
            request = json.loads(message)
            channel.send(json.dumps({"type": "pong", "seq": request["seq"]}))

    source = SyntheticVideoTrack()
    offerer.addTrack(source)
    channel = offerer.createDataChannel("emotions")

    @channel.on("open")
    def _open() -> None:
        channel.send(json.dumps({"type": "ping", "seq": 1}))

    @channel.on("message")
    def _reply(message: str | bytes) -> None:
        if not reply.done():
            reply.set_result(json.loads(message))

    try:
        await offerer.setLocalDescription(await offerer.createOffer())
        offer = await gathered(offerer)
        offer_candidates = assert_private_candidates(offer.sdp)
        assert "m=video" in offer.sdp and "m=application" in offer.sdp

        await answerer.setRemoteDescription(offer)
        await answerer.setLocalDescription(await answerer.createAnswer())
        answer = await gathered(answerer)
        answer_candidates = assert_private_candidates(answer.sdp)
        await offerer.setRemoteDescription(answer)

        await asyncio.wait_for(asyncio.gather(*connected.values()), CONNECT_TIMEOUT_S)
        frames = await asyncio.wait_for(frames_done, CONNECT_TIMEOUT_S)
        pong = await asyncio.wait_for(reply, CONNECT_TIMEOUT_S)
    finally:
        for task in consumers:
            task.cancel()
        await offerer.close()
        await answerer.close()

    assert {address for address, _ in offer_candidates + answer_candidates} == {netns_ip}
    assert len(frames) >= FRAMES_WANTED
    assert all((f.width, f.height) == (WIDTH, HEIGHT) for f in frames)
    image = frames[-1].to_ndarray(format="bgr24")
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert source.sent >= FRAMES_WANTED
    assert pong == {"type": "pong", "seq": 1}
