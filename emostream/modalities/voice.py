"""Voice: audio tracks in, a voice message per window out.

Each audio track is resampled to 16 kHz mono and cut into windows of the voice card's
size and hop (``stream/voice_track.py``, ``stream/windows.py``); voice activity detection
decides which windows are speech. A speech window is a job (windows never supersede one
another below ``broker.voice_max_in_flight``, and have their own, longer
``broker.voice_deadline_ms``); a silent one is a ``speech: false`` message sent at once,
without a model. A server without voice says so once per session (``voice_unavailable``)
and reads the audio only to keep the transport's receive queue short. On the Redis wire a
window travels as float32 or int16 PCM (``broker.audio_codec``), its outcome as one row of
scores.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import numpy as np

from emostream import metrics
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.codecs import (
    MAX_RATE,
    Fields,
    WireError,
    decode_window,
    encode_window,
    field_int,
    field_num,
    field_text,
)
from emostream.modalities.base import (
    ROLES,
    MediaTrack,
    ModalitySpec,
    ModalityView,
    ServedModelConfig,
    Service,
    TrackSink,
)
from emostream.pipeline.jobs import Job, VoiceInfo
from emostream.pipeline.messages import silence_message, voice_message
from emostream.pipeline.outcomes import Scored, Scores, VoiceScores
from emostream.schema import VoiceMessage
from emostream.stats import LATENCY_WINDOW, percentiles

if TYPE_CHECKING:
    from emostream.settings import Settings
    from emostream.stream.voice_track import TimedWindow

log = logging.getLogger(__name__)

#: what a session without voice is told, once
NO_VOICE = "this server has no voice model: audio is received but not analysed"


class VoiceView(ModalityView):
    """A session's speech windows: their latencies and classes."""

    def __init__(self, session: str, unsure_below: float) -> None:
        self.session = session
        self.unsure_below = unsure_below
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.classes: Counter[str] = Counter()

    def message(self, scored: Scored[Any], latency_s: float) -> VoiceMessage:
        self.latencies.append(latency_s)
        msg = voice_message(
            scored, latency_s=latency_s, unsure_below=self.unsure_below, session=self.session
        )
        self.classes[msg.label or ""] += 1
        return msg

    def summary(self) -> dict[str, object]:
        return {"latency_ms": percentiles(self.latencies), "classes": dict(self.classes)}


class VoiceSpec(ModalitySpec):
    name = "voice"
    track_kind = "audio"
    input_kind = "audio"
    required = False
    shadows = False
    summary_key = "voice"
    info_fields = frozenset({b"track", b"start", b"end", b"rate", b"role"})
    supersedes = False

    def model_config(self, settings: Settings) -> ServedModelConfig:
        return settings.voice

    def in_flight(self, config: BrokerConfig) -> int:
        return config.voice_max_in_flight

    def deadline_s(self, config: BrokerConfig) -> float:
        """A voice window is worth scoring until its result would come far too late."""
        return config.voice_deadline_ms / 1000.0

    def load(self, settings: Settings, *, ingest: bool) -> Service:
        from emostream.models.voice import VoiceService

        return VoiceService.load(settings, vad=ingest)

    def describe(self, analyzer: object) -> str:
        return "voice windows"

    # -- the wire -------------------------------------------------------------------------
    def encode_info(self, info: VoiceInfo) -> Fields:
        return {
            b"track": info.track.encode(),
            b"start": repr(info.start).encode(),
            b"end": repr(info.end).encode(),
            b"rate": str(info.sample_rate).encode(),
            b"role": info.role.encode(),
        }

    def decode_info(self, fields: Fields) -> VoiceInfo:
        start, end = field_num(fields, b"start"), field_num(fields, b"end")
        if not end > start:
            raise WireError(f"fields 'start' {start} and 'end' {end} are not a time span")
        role = field_text(fields, b"role", "unknown")  # an older ingest node sends none
        if role not in ROLES:
            raise WireError(f"field 'role' is {role[:20]!r}, not one of {', '.join(ROLES)}")
        return VoiceInfo(
            track=field_text(fields, b"track"),
            start=start,
            end=end,
            sample_rate=field_int(fields, b"rate", 1, MAX_RATE),
            role=role,
        )

    def encode_payload(self, job: Job, config: BrokerConfig) -> Fields:
        return encode_window(job.payload, config.audio_codec)

    def decode_payload(self, fields: Fields, job: Job) -> np.ndarray:
        return decode_window(fields)

    def encode_scores(self, result: Scores) -> Fields:
        scores = np.asarray(result.scores, "<f4").reshape(1, len(result.classes))
        return {b"scores": scores.tobytes()}

    def decode_scores(self, fields: Fields, classes: tuple[str, ...]) -> VoiceScores:
        if b"boxes" in fields:
            raise WireError("a voice outcome with field 'boxes'")
        row = np.frombuffer(fields.get(b"scores", b""), "<f4")
        if row.size != len(classes):
            raise WireError(f"field 'scores' holds {row.size} values for {len(classes)} classes")
        if not np.isfinite(row).all():
            raise WireError("field 'scores' holds a NaN or an infinity")
        return VoiceScores(row.reshape(1, -1).astype(np.float32), classes)

    # -- sessions -------------------------------------------------------------------------
    def view(self, session: str, smoothing: float, unsure_below: float) -> VoiceView:
        return VoiceView(session, unsure_below)

    async def read(self, sink: TrackSink, track: MediaTrack) -> None:
        """Windows of the track: speech ones to the broker, silent ones said at once."""
        from emostream.stream.voice_track import AudioWindows, read_windows

        service = sink.service(self.name)
        try:
            if service is None:
                raise LookupError(NO_VOICE)
            windows = AudioWindows(service.windower())  # type: ignore[attr-defined]
        except LookupError as exc:
            sink.notice("voice_unavailable", str(exc))
            await _discard(sink, track)
            return

        async def submit(timed: list[TimedWindow]) -> None:
            for t in timed:
                await self._window(sink, track, t)

        try:
            await read_windows(track.frames, windows, submit, sink.touch, time.monotonic)
        except Exception as exc:  # this track's audio only: the session and others go on
            log.warning("session %s: audio track %s failed (%r)", sink.id, track.name, exc)
            await _discard(sink, track)

    async def _window(self, sink: TrackSink, track: MediaTrack, timed: TimedWindow) -> None:
        """A speech window becomes a voice job; a silent one its message, at once."""
        w = timed.window
        info = VoiceInfo(track=track.name, start=w.start, end=w.end, role=track.role)
        if sink.closed.is_set():
            return
        metrics.VOICE_WINDOWS.labels("true" if w.speech else "false").inc()
        if not w.speech:
            latency = time.monotonic() - timed.ended
            sink.send(silence_message(info, latency_s=latency, session=sink.id))
            return
        seq = sink.next_seq(self.name)
        await sink.submit(Job(sink.id, seq, w.start, w.samples, info, created=timed.ended))


async def _discard(sink: TrackSink, track: MediaTrack) -> None:
    """Read a track no one analyses, so the transport's queue stays short."""
    async for _ in track.frames:
        sink.touch()
