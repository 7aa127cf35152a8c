"""Faces: video tracks in, a face message per processed frame out.

Frames are converted to BGR and downscaled once on arrival (``stream/frames.py``, on the
session manager's small ``frame-convert`` pool, off the event loop) and submitted as jobs;
a newer frame supersedes a queued older one (``broker.max_in_flight``) and a frame older
than ``broker.deadline_ms`` is dropped. On the Redis wire a frame travels as JPEG or raw
pixels (``broker.codec``) and its outcome as boxes plus a (faces, classes) score matrix.
The session side gives faces ``track_id``s (``IouTracker``) and, optionally, EMA-smoothed
scores.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import numpy as np

from emostream import metrics
from emostream.broker.broker_config import BrokerConfig
from emostream.broker.codecs import (
    MAX_SOURCE_SIDE,
    Fields,
    WireError,
    decode_frame,
    encode_frame,
    field_int,
    field_num,
)
from emostream.modalities.base import (
    MediaTrack,
    ModalitySpec,
    ModalityView,
    ServedModelConfig,
    Service,
    TrackSink,
)
from emostream.pipeline.analyzer import Analyzer
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.messages import face_message
from emostream.pipeline.outcomes import FaceScores, Scored, Scores
from emostream.schema import FaceMessage
from emostream.stats import LATENCY_WINDOW, percentiles

if TYPE_CHECKING:
    from emostream.settings import Settings

MAX_FACES = 1024  # boxes one outcome may carry


def payload_size(info: FrameInfo) -> tuple[int, int]:
    """(width, height) of the payload a job's frame info implies: its downscaled size."""
    return round(info.width * info.scale), round(info.height * info.scale)


class FaceView(ModalityView):
    """Track ids (and smoothing) across a session's frames; its latencies and classes."""

    def __init__(self, session: str, smoothing: float, unsure_below: float) -> None:
        from emostream.models.face_tracking.ids import IouTracker

        self.session = session
        self.unsure_below = unsure_below
        self.tracker = IouTracker(alpha=smoothing)
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.classes: Counter[str] = Counter()

    def message(self, scored: Scored[Any], latency_s: float) -> FaceMessage:
        self.latencies.append(latency_s)
        msg = face_message(
            scored,
            latency_s=latency_s,
            unsure_below=self.unsure_below,
            tracker=self.tracker,
            session=self.session,
        )
        self.classes.update(f.label for f in msg.faces)
        return msg

    def summary(self) -> dict[str, object]:
        return {"latency_ms": percentiles(self.latencies), "classes": dict(self.classes)}


class FaceSpec(ModalitySpec):
    name = "face"
    track_kind = "video"
    input_kind = "image"
    required = True
    shadows = True
    summary_key = None  # the first modality's figures stay at the top of the summary
    info_fields = frozenset({b"width", b"height", b"scale", b"detect"})
    supersedes = True

    def model_config(self, settings: Settings) -> ServedModelConfig:
        return settings.face

    def in_flight(self, config: BrokerConfig) -> int:
        return config.max_in_flight

    def deadline_s(self, config: BrokerConfig) -> float:
        return config.deadline_ms / 1000.0

    def load(self, settings: Settings, *, ingest: bool) -> Service:
        from emostream.models.face import FaceAnalyzer

        return Service(FaceAnalyzer.from_settings(settings))

    def describe(self, analyzer: Analyzer) -> str:
        detector = getattr(analyzer, "detector", None)
        return f"detector {detector.ref}" if detector is not None else self.name

    def ready(self, service: Service) -> dict[str, object]:
        slot = service.slot
        if slot is None:
            return {self.name: service.status()}
        detector = getattr(slot.analyzer, "detector", None)
        return {self.name: slot.status(), "detector": getattr(detector, "ref", None)}

    # -- the wire -------------------------------------------------------------------------
    def encode_info(self, info: FrameInfo) -> Fields:
        return {
            b"width": str(info.width).encode(),
            b"height": str(info.height).encode(),
            b"scale": repr(info.scale).encode(),
            b"detect": b"1" if info.detect else b"0",
        }

    def decode_info(self, fields: Fields) -> FrameInfo:
        detect = fields.get(b"detect", b"1")
        if detect not in (b"0", b"1"):
            raise WireError(f"field 'detect' is {detect[:20]!r}, not 0 or 1")
        scale = field_num(fields, b"scale")
        if not 0 < scale <= 1:
            raise WireError(f"field 'scale' is {scale}, not in (0, 1]")
        return FrameInfo(
            width=field_int(fields, b"width", 1, MAX_SOURCE_SIDE),
            height=field_int(fields, b"height", 1, MAX_SOURCE_SIDE),
            scale=scale,
            detect=detect == b"1",
        )

    def encode_payload(self, job: Job, config: BrokerConfig) -> Fields:
        return encode_frame(job.payload, config.codec, config.jpeg_quality)

    def decode_payload(self, fields: Fields, job: Job) -> np.ndarray:
        return decode_frame(fields, payload_size(job.frame))

    def encode_scores(self, result: Scores) -> Fields:
        assert isinstance(result, FaceScores)
        rows = len(result.boxes)
        scores = np.asarray(result.scores, "<f4").reshape(rows, len(result.classes))
        return {
            b"boxes": np.asarray(result.boxes, "<i4").reshape(-1, 4).tobytes(),
            b"scores": scores.tobytes(),
        }

    def decode_scores(self, fields: Fields, classes: tuple[str, ...]) -> FaceScores:
        flat = np.frombuffer(fields.get(b"boxes", b""), "<i4")
        scores = np.frombuffer(fields.get(b"scores", b""), "<f4")
        if not classes or flat.size % 4 or scores.size != flat.size // 4 * len(classes):
            raise WireError("fields 'boxes', 'scores' and 'classes' do not agree")
        if flat.size // 4 > MAX_FACES:
            raise WireError(f"{flat.size // 4} faces in one outcome, at most {MAX_FACES}")
        if not np.isfinite(scores).all():
            raise WireError("field 'scores' holds a NaN or an infinity")
        boxes = [(int(a), int(b), int(c), int(d)) for a, b, c, d in flat.reshape(-1, 4)]
        matrix = scores.reshape(len(boxes), len(classes)).astype(np.float32)
        return FaceScores(boxes, matrix, classes)

    # -- sessions -------------------------------------------------------------------------
    def view(self, session: str, smoothing: float, unsure_below: float) -> FaceView:
        return FaceView(session, smoothing, unsure_below)

    async def read(self, sink: TrackSink, track: MediaTrack) -> None:
        """Each video frame: converted off the loop, then a job."""
        from av import VideoFrame

        from emostream.stream.frames import convert

        async for frame in track.frames:
            if not isinstance(frame, VideoFrame):  # a video track yields only video frames
                continue
            t0 = time.monotonic()
            sink.touch()
            w, h = frame.width, frame.height
            image, scale = await convert(sink.convert_pool, frame, sink.max_side)
            pts = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0  # type: ignore[operator]
            # arrival to converted image, the wait for a pool thread included
            metrics.STAGE_LATENCY.labels("decode", self.name).observe(time.monotonic() - t0)
            seq = sink.next_seq(self.name)
            sink.count_in()
            if sink.closed.is_set():
                return
            await sink.submit(Job(sink.id, seq, pts, image, FrameInfo(w, h, scale), created=t0))
