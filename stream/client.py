"""The Python client: publish a camera, microphone or media file; receive the results.

This is what call-centre software embeds::

    async with EmotionClient("http://127.0.0.1:8000", source=Source.file("call.mp4")) as c:
        async for message in c.messages():
            if isinstance(message, FaceMessage):
                print([f.label for f in message.faces])
            elif isinstance(message, VoiceMessage) and message.speech:
                print(message.track, message.start, message.label)

``Source.files(["agent.wav", "customer.wav"])`` publishes two recordings as two audio
tracks; voice messages name theirs by SDP ``mid`` (``EmotionClient.mid(track)``).

``messages()`` yields the messages of docs/ARCHITECTURE.md as their typed models (``FaceMessage``,
``VoiceMessage``, ``ErrorMessage`` from ``emostream.schema``); ``message.to_json()`` is the
exact JSON the server sent.

Signalling is the JSON offer (``/v1/offer``) or any WHIP endpoint; results arrive on the
``emotions`` data channel this client opens. ``token`` (the API token, when the server has
them) goes with the offer; later calls on the session (ending it) carry the session's own
``session_token`` from the answer, falling back to ``token`` for servers that send none.
ICE servers are none unless given, so a local run never reaches outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.contrib.media import MediaPlayer
from av import AudioFrame, VideoFrame
from pydantic import ValidationError

from emostream.extras import require
from emostream.schema import Message, parse_message
from emostream.stream.filesource import LoopingFileTrack, kinds_in

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000


class ClientError(RuntimeError):
    pass


class CameraTrack(VideoStreamTrack):
    """An OpenCV camera as a WebRTC video track (frames read in a thread)."""

    def __init__(self, index: int, fps: float = 15.0) -> None:
        super().__init__()
        import cv2

        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            raise ClientError(f"camera {index} could not be opened")
        self._period = 1.0 / fps
        self._t0: float | None = None
        self._n = 0

    async def recv(self) -> VideoFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        self._n += 1
        wait = self._t0 + self._n * self._period - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        ok, image = await asyncio.to_thread(self._cap.read)
        if not ok:
            self.stop()
            raise ClientError("camera stopped delivering frames")
        frame = VideoFrame.from_ndarray(np.asarray(image, np.uint8), format="bgr24")
        frame.pts = round(self._n * self._period * VIDEO_CLOCK)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame

    def stop(self) -> None:
        super().stop()
        self._cap.release()


class MicrophoneTrack(MediaStreamTrack):
    """A sounddevice (PortAudio) input as a WebRTC audio track: 48 kHz mono, 20 ms frames."""

    kind = "audio"
    RATE = 48_000
    SAMPLES = 960  # 20 ms

    def __init__(self, device: int | str | None = None) -> None:
        super().__init__()
        try:
            sd = require("sounddevice", extra="mic")
        except OSError as exc:  # PortAudio missing: apt-get install libportaudio2
            raise ClientError(f"microphone: PortAudio is not available ({exc})") from None
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise ClientError(f"microphone: no input device ({exc})") from None
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=50)
        loop = asyncio.get_running_loop()

        def callback(data: np.ndarray, frames: int, t: object, status: object) -> None:
            block = data[:, 0].copy()
            loop.call_soon_threadsafe(self._offer, block)

        self._stream = sd.InputStream(
            device=device,
            channels=1,
            samplerate=self.RATE,
            blocksize=self.SAMPLES,
            dtype="int16",
            callback=callback,
        )
        self._stream.start()
        self._pts = 0
        self.name = str(info.get("name", device))

    def _offer(self, block: np.ndarray) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # keep up with real time: drop the oldest block
        self._queue.put_nowait(block)

    async def recv(self) -> AudioFrame:
        block = await self._queue.get()
        frame = AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._pts += block.shape[0]
        return frame

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(Exception):
            self._stream.stop()
            self._stream.close()


@dataclass
class Source:
    """What to publish: tracks, and the resources to release afterwards."""

    tracks: list[MediaStreamTrack] = field(default_factory=list)
    player: MediaPlayer | None = None
    labels: list[str] = field(default_factory=list)  # what each track plays (a file name)

    def label(self, track: MediaStreamTrack) -> str:
        for t, name in zip(self.tracks, self.labels, strict=False):
            if t is track:
                return name
        return track.kind

    @classmethod
    def file(cls, path: str, loop: bool = False) -> Source:
        """The file's video and audio, paced at its own rate; with ``loop``, forever
        (``LoopingFileTrack``: aiortc's own loop stops after one pass on most MP4s)."""
        if loop:
            looped: list[MediaStreamTrack] = [LoopingFileTrack(path, k) for k in kinds_in(path)]
            if not looped:
                raise ClientError(f"{path}: no audio or video stream")
            return cls(looped, labels=[f"{path} ({t.kind})" for t in looped])
        player = MediaPlayer(path)
        tracks = [t for t in (player.video, player.audio) if t is not None]
        if not tracks:
            raise ClientError(f"{path}: no audio or video stream")
        return cls(tracks, player, [f"{path} ({t.kind})" for t in tracks])

    @classmethod
    def files(cls, paths: Sequence[str], loop: bool = False) -> Source:
        """Several files as one session: all their tracks, in the order given; two audio
        recordings become two audio tracks (agent and customer, say), told apart in voice
        messages by ``track`` (see ``EmotionClient.mid``)."""
        parts = [cls.file(p, loop) for p in paths]
        player = parts[0].player if len(parts) == 1 else None
        tracks = [t for part in parts for t in part.tracks]
        return cls(tracks, player, [name for part in parts for name in part.labels])

    @classmethod
    def camera(cls, index: int, fps: float = 15.0) -> Source:
        return cls([CameraTrack(index, fps)])

    @classmethod
    def microphone(cls, device: int | str | None = None) -> Source:
        """The default (or named) input device through sounddevice; needs a running loop."""
        return cls([MicrophoneTrack(device)])

    def stop(self) -> None:
        for t in self.tracks:
            t.stop()


#: How long ``close`` waits for aiortc to shut the peer connection's transports down.
CLOSE_TIMEOUT_S = 10.0


class EmotionClient:
    def __init__(
        self,
        url: str | None = None,
        *,
        source: Source,
        whip: str | None = None,
        token: str | None = None,
        ice_servers: list[str] | None = None,
        timeout_s: float = 30.0,
        audio_codec: str | None = None,
    ) -> None:
        if not url and not whip:
            raise ClientError("give the server URL or a WHIP endpoint")
        self.url = (url or "").rstrip("/")
        self.whip = whip
        self.source = source
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        servers = [RTCIceServer(urls=u) for u in ice_servers or []]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.timeout_s = timeout_s
        self.audio_codec = audio_codec
        self.session_id: str | None = None
        self.session_token: str | None = None
        self.resource: str | None = None
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._http = httpx.AsyncClient(timeout=timeout_s, trust_env=False)

    async def __aenter__(self) -> EmotionClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        channel = self.pc.createDataChannel("emotions")

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            try:
                self._queue.put_nowait(parse_message(message))
            except ValidationError as exc:  # a newer server's message, or not ours at all
                log.debug("ignored a data channel message: %s", exc)

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self._queue.put_nowait(None)

        for track in self.source.tracks:
            self.pc.addTrack(track)
        if self.audio_codec:
            self._offer_only(self.audio_codec)
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers all ICE
        offer = self.pc.localDescription.sdp
        if self.whip:
            resp = await self._http.post(
                self.whip,
                content=offer,
                headers={**self.headers, "Content-Type": "application/sdp"},
            )
            self._check(resp, 201)
            answer = resp.text
            self.resource = str(httpx.URL(self.whip).join(resp.headers.get("location", "")))
            self.session_id = self.resource.rstrip("/").rsplit("/", 1)[-1]
            self.session_token = resp.headers.get("x-session-token")
        else:
            resp = await self._http.post(
                f"{self.url}/v1/offer", headers=self.headers, json={"sdp": offer, "type": "offer"}
            )
            self._check(resp, 200)
            body = resp.json()
            answer, self.session_id = body["sdp"], body["session_id"]
            self.session_token = body.get("session_token")
            self.resource = f"{self.url}/v1/sessions/{self.session_id}"
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def _offer_only(self, codec: str) -> None:
        """Offer audio in ``codec`` alone (``PCMU``, ``PCMA``: what softphones and SIP
        gateways send; ``opus``), the way ``setCodecPreferences`` does in a browser."""
        want = f"audio/{codec}".lower()
        codecs = [
            c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == want
        ]
        if not codecs:
            known = ", ".join(c.mimeType[6:] for c in RTCRtpSender.getCapabilities("audio").codecs)
            raise ClientError(f"audio codec {codec!r} is not one of {known}")
        for t in self.pc.getTransceivers():
            if t.kind == "audio":
                t.setCodecPreferences(codecs)

    def mid(self, track: MediaStreamTrack) -> str | None:
        """The SDP ``mid`` a published track was sent under: the ``track`` field of the
        voice messages about it (known once ``connect`` has made the offer)."""
        for t in self.pc.getTransceivers():
            if t.sender.track is track:
                return t.mid
        return None

    @staticmethod
    def _check(resp: httpx.Response, want: int) -> None:
        if resp.status_code != want:
            try:
                detail = resp.json()
            except ValueError:
                detail = resp.text[:200]
            raise ClientError(f"signalling failed: HTTP {resp.status_code}: {detail}")

    async def messages(self, idle_timeout_s: float | None = None) -> AsyncIterator[Message]:
        """Results until the connection ends (or nothing arrives for ``idle_timeout_s``).

        ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` returns the item
        and swallows a cancellation that arrives as the item does, so a reader cancelled
        while messages flow could go on reading for ever (a hang seen in CI).
        """
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):  # not wait_for: see below
                    item = await self._queue.get()
            except TimeoutError:
                return
            if item is None:
                return
            yield item

    @property
    def session_headers(self) -> dict[str, str]:
        """What calls on this session send: its session token, else the API token."""
        if self.session_token:
            return {"Authorization": f"Bearer {self.session_token}"}
        return self.headers

    async def close(self) -> None:
        if self.resource:
            with contextlib.suppress(httpx.HTTPError):
                await self._http.delete(self.resource, headers=self.session_headers)
            self.resource = None
        self.source.stop()
        try:  # a peer connection whose transports never finish closing must not hang the caller
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.pc.close()
        except TimeoutError:
            log.warning("the peer connection did not close within %.0f s", CLOSE_TIMEOUT_S)
        await self._http.aclose()
        self._queue.put_nowait(None)
