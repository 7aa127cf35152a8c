"""Audio in: any decoded frame or file becomes 16 kHz mono float32, the voice model's input.

WebRTC brings Opus at 48 kHz (stereo or mono) and G.711 at 8 kHz; files come as wav, flac,
mp3, ogg, webm or m4a at any rate. All of it goes through one FFmpeg resampler (PyAV), so a
live call and ``emostream analyze`` of the same recording feed the model the same samples.

A recording is decoded as a stream (``ChannelReader``): frame by frame, resampled and
handed on in chunks of about a second, so an hour costs the memory of a minute. Its
channels can be tracks of their own (a stereo call recording: agent left, customer
right); a channel whose role is not analysed is never resampled or windowed, only its
seconds counted, and when no channel is analysed the packets are not even decoded.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

from emostream.stream.media import MediaError

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm"}
CHUNK_SAMPLES = SAMPLE_RATE  # samples handed on at once: one second at 16 kHz
#: What PyAV raises on input it cannot read (its errors are ``FFmpegError``s; a metadata
#: tag that is not UTF-8 would be a ``UnicodeDecodeError`` but for ``metadata_errors``).
DECODE_ERRORS = (av.FFmpegError, UnicodeError, ValueError, OSError, EOFError)


class Resampler:
    """Frames of any rate, layout and sample format in; float32 mono samples out."""

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._inner = AudioResampler(format="flt", layout="mono", rate=rate)

    def __call__(self, frame: AudioFrame | None) -> np.ndarray:
        """The samples ``frame`` yields (None flushes what the resampler holds)."""
        out = [f.to_ndarray().reshape(-1) for f in self._inner.resample(frame)]
        if not out:
            return np.zeros(0, np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


def resample(frames: Iterable[AudioFrame], rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Each frame's samples at ``rate``, then what the resampler held back."""
    r = Resampler(rate)
    for frame in frames:
        yield r(frame)
    yield r(None)


def open_media(source: Path | bytes, name: str = "") -> InputContainer:
    """An FFmpeg container on a file or on bytes in memory (never written anywhere).

    Metadata tags that are not UTF-8 (a Latin-1 title) are read with replacement
    characters: they say nothing we use, and must not make the file unreadable. Raises
    ``MediaError`` ``unsupported_format`` (415) when FFmpeg recognises no format.
    """
    what = name or (str(source) if isinstance(source, Path) else "the body")
    try:
        target = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        return av.open(target, "r", metadata_errors="replace")
    except DECODE_ERRORS as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise MediaError(
            "unsupported_format", f"{what}: not an audio or video format we read ({why})", 415
        ) from None


def media_streams(path: Path) -> set[str]:
    """The kinds of stream FFmpeg finds in ``path`` (``audio``, ``video``); none for a file
    it cannot open. The one probe for "is this audio only" and "has this video sound"."""
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            kinds = {"audio"} if container.streams.audio else set()
            return kinds | ({"video"} if container.streams.video else set())
    except DECODE_ERRORS:
        return set()


def header_seconds(container: InputContainer) -> float | None:
    """The duration the container's header claims (the longest of its streams'), if any:
    known before a sample is decoded, so a long file is refused at once."""
    found: list[float] = []
    if container.duration is not None and container.duration > 0:
        found.append(container.duration / av.time_base)
    for stream in container.streams:
        if stream.duration is not None and stream.duration > 0 and stream.time_base:
            found.append(float(stream.duration * stream.time_base))
    return max(found) if found else None


@dataclass(frozen=True)
class Channel:
    """One track of a recording: a channel of its first audio stream (``index``; None: all
    channels mixed down to mono), the track's name and speaker role, and whether that role
    is analysed (``calls.analyse_roles``)."""

    name: str
    role: str = "unknown"
    index: int | None = None
    analysed: bool = True


def channel_tracks(roles: Sequence[str] | None, analysed: Iterable[str]) -> list[Channel]:
    """The tracks for ``roles`` (one per channel, in order; None: one mixed track of role
    unknown, named ``0``). A track is named after its role, or after its channel's index
    when two channels share a role."""
    allowed = set(analysed)
    if not roles:
        return [Channel("0", "unknown", None, "unknown" in allowed)]
    unique = len(set(roles)) == len(roles)
    return [
        Channel(role if unique else str(i), role, i, role in allowed)
        for i, role in enumerate(roles)
    ]


class ChannelReader:
    """The first audio stream of an open container, decoded as a stream: ``chunks()``
    yields ``(track index, samples)``, float32 mono at ``rate``, about ``chunk`` samples
    at a time per track, in media order. ``seconds`` counts the media read so far (every
    channel has as many); it is what an unanalysed track is credited with.

    Raises ``MediaError``: ``no_audio``, ``channels_mismatch`` (``tracks`` name channels
    the stream lacks), ``too_long`` (413: the header, else the decoded media, exceeds
    ``max_seconds``; the header is read before any decoding) or ``undecodable``.
    """

    def __init__(
        self,
        container: InputContainer,
        tracks: Sequence[Channel],
        *,
        rate: int = SAMPLE_RATE,
        max_seconds: float = 3600.0,
        chunk: int = CHUNK_SAMPLES,
        source: str = "",
    ) -> None:
        self.source = source or "the recording"
        if not container.streams.audio:
            raise MediaError("no_audio", f"{self.source}: the file has no audio stream")
        self.container = container
        self.stream: AudioStream = container.streams.audio[0]
        self.tracks = list(tracks)
        self.rate, self.chunk, self.max_seconds = rate, chunk, max_seconds
        self.seconds = 0.0
        have = self.stream.channels
        split = [t.index for t in self.tracks if t.index is not None]
        if split and (len(split) != have or sorted(split) != list(range(have))):
            raise MediaError(
                "channels_mismatch",
                f"{self.source}: the audio has {have} channel(s); channels names {len(split)}",
            )
        claimed = header_seconds(container)
        if claimed is not None and claimed > max_seconds:
            self._too_long(f"its header says {claimed:.1f} s")

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every analysed track's samples, chunk by chunk; then the resamplers' tails."""
        try:
            if not any(t.analysed for t in self.tracks):
                self._count_packets()
                return
            yield from self._decode()
        except DECODE_ERRORS as exc:
            if isinstance(exc, MediaError):
                raise
            raise MediaError("undecodable", f"{self.source}: cannot decode audio ({exc})") from None

    # -- inside --------------------------------------------------------------------------
    def _too_long(self, why: str) -> None:
        raise MediaError(
            "too_long",
            f"{self.source}: longer than the limit of {self.max_seconds:g} s of media ({why})",
            413,
        )

    def _count(self, seconds: float) -> None:
        self.seconds += seconds
        if self.seconds > self.max_seconds + 1e-6:
            self._too_long(f"over {self.max_seconds:g} s decoded")

    def _count_packets(self) -> None:
        """No track analysed: the seconds from the packets' durations, without decoding
        (a packet with no duration is decoded just to count its samples)."""
        for packet in self.container.demux(self.stream):
            if packet.size == 0:
                continue
            if packet.duration and packet.time_base:
                self._count(float(packet.duration * packet.time_base))
            else:
                for frame in packet.decode():
                    self._count(frame.samples / (frame.sample_rate or self.rate))

    def _decode(self) -> Iterator[tuple[int, np.ndarray]]:
        live = [i for i, t in enumerate(self.tracks) if t.analysed]
        mix = [i for i in live if self.tracks[i].index is None]
        resamplers = {i: Resampler(self.rate) for i in live}
        held: dict[int, list[np.ndarray]] = {i: [] for i in live}
        sizes = dict.fromkeys(live, 0)
        planar: AudioResampler | None = None  # the stream's channels as float planes

        def take(
            i: int, samples: np.ndarray, last: bool = False
        ) -> Iterator[tuple[int, np.ndarray]]:
            if samples.size:
                held[i].append(samples)
                sizes[i] += samples.size
            if sizes[i] and (last or sizes[i] >= self.chunk):
                yield i, np.concatenate(held[i])
                held[i], sizes[i] = [], 0

        for frame in self.container.decode(self.stream):
            self._count(frame.samples / (frame.sample_rate or self.rate))
            for i in mix:
                yield from take(i, resamplers[i](frame))
            if len(mix) == len(live):
                continue
            if planar is None:
                planar = AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
            for plane_frame in planar.resample(frame):
                planes = plane_frame.to_ndarray()
                for i in live:
                    index = self.tracks[i].index
                    if index is None:
                        continue
                    plane = np.ascontiguousarray(planes[index : index + 1], dtype=np.float32)
                    mono = AudioFrame.from_ndarray(plane, format="flt", layout="mono")
                    mono.sample_rate = plane_frame.sample_rate
                    yield from take(i, resamplers[i](mono))
        for i in live:
            yield from take(i, resamplers[i](None), last=True)


def read_audio(path: Path, rate: int = SAMPLE_RATE, max_seconds: float = 3600.0) -> np.ndarray:
    """The first audio stream of a file (audio or video), mixed to float32 mono at
    ``rate``, whole: for clips (training, tests). Analysis streams (``ChannelReader``).

    Raises ``MediaError`` with the reason for a file with no audio, one FFmpeg cannot
    decode, or one longer than ``max_seconds``.
    """
    with open_media(path) as container:
        reader = ChannelReader(
            container, [Channel("0")], rate=rate, max_seconds=max_seconds, source=str(path)
        )
        chunks = [samples for _, samples in reader.chunks()]
    if not chunks:
        raise MediaError("no_audio", f"{path}: the audio stream holds no samples")
    return np.concatenate(chunks)
