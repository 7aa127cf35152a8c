"""Jobs and outcomes as Redis stream entries: flat binary fields, no JSON around pixels.

A job entry carries the fields of ``Job`` and its ``FrameInfo`` (source size, scale,
whether to detect) as short text fields, and the downscaled BGR frame either as JPEG
(default, quality 90: about 25-60 kB for a 640x360 frame, see docs/ARCHITECTURE.md) or raw
``uint8`` bytes with its shape (``raw``: exact, 691 kB at 640x360). An outcome entry says
its ``kind`` (scored, dropped, failed) and carries boxes and scores as packed
little-endian arrays. Nothing is base64-encoded.

Times on the wire are wall-clock seconds (``time.time()``): ``time.monotonic()`` means
nothing on another machine. Each side converts at its edge, so a result's ``created``
comes back to the ingest node on its own clock and end-to-end latency is exact even when
the worker's clock is off; only the deadline check on the worker depends on clocks being
synchronised (NTP).
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np

from emostream.broker.config import Codec
from emostream.pipeline.jobs import MODALITIES, DropReason, FrameInfo, Job, Modality
from emostream.pipeline.outcomes import Dropped, FaceScores, Failed, Outcome, Scored

WIRE_VERSION = b"2"  # 2: typed frame fields instead of a JSON ``meta``
Fields = dict[bytes, bytes]
MAX_SIDE = 8192  # a larger frame on the stream is malformed, not a reason to allocate


class WireError(ValueError):
    """An entry that is not a job or result this version can read."""


def to_wall(mono: float) -> float:
    return mono if math.isinf(mono) else time.time() - (time.monotonic() - mono)


def to_mono(wall: float) -> float:
    return wall if math.isinf(wall) else time.monotonic() - (time.time() - wall)


def _num(fields: Fields, key: bytes) -> float:
    try:
        return float(fields[key])
    except (KeyError, ValueError) as exc:
        raise WireError(f"field {key.decode()!r}: {exc}") from None


def _text(fields: Fields, key: bytes, default: str | None = None) -> str:
    raw = fields.get(key)
    if raw is None:
        if default is None:
            raise WireError(f"field {key.decode()!r} missing")
        return default
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise WireError(f"field {key.decode()!r} is not UTF-8") from None


def encode_frame(frame: np.ndarray, codec: Codec, quality: int = 90) -> Fields:
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or frame.size == 0:
        raise ValueError(f"not an 8-bit image: shape {frame.shape}, dtype {frame.dtype}")
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"cannot JPEG-encode a frame of shape {frame.shape}")
        return {b"codec": b"jpeg", b"data": buf.tobytes()}
    data = np.ascontiguousarray(frame, dtype=np.uint8)
    shape = ",".join(str(d) for d in data.shape).encode()
    return {b"codec": b"raw", b"shape": shape, b"data": data.tobytes()}


def decode_frame(fields: Fields) -> np.ndarray:
    codec = fields.get(b"codec")
    data = fields.get(b"data")
    if data is None:
        raise WireError("field 'data' missing")
    if codec == b"jpeg":
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise WireError(f"'data' is not a JPEG image ({len(data)} bytes)")
        return frame
    if codec == b"raw":
        try:
            shape = tuple(int(d) for d in _text(fields, b"shape").split(","))
        except ValueError:
            raise WireError("field 'shape' is not a list of integers") from None
        if len(shape) not in (2, 3) or not all(0 < d <= MAX_SIDE for d in shape[:2]):
            raise WireError(f"bad frame shape {shape}")
        if len(shape) == 3 and shape[2] not in (1, 3):
            raise WireError(f"bad channel count in shape {shape}")
        if int(np.prod(shape)) != len(data):
            raise WireError(f"shape {shape} does not match {len(data)} bytes")
        return np.frombuffer(data, np.uint8).reshape(shape)
    raise WireError(f"unknown codec {codec!r}")


def _header_fields(job: Job) -> Fields:
    info = job.info
    fields: Fields = {
        b"v": WIRE_VERSION,
        b"session": job.session.encode(),
        b"modality": job.modality.encode(),
        b"seq": str(job.seq).encode(),
        b"created": repr(to_wall(job.created)).encode(),
        b"width": str(info.width).encode(),
        b"height": str(info.height).encode(),
        b"scale": repr(info.scale).encode(),
        b"detect": b"1" if info.detect else b"0",
    }
    if job.pts is not None:
        fields[b"pts"] = repr(job.pts).encode()
    return fields


def encode_job(job: Job, codec: Codec = "jpeg", quality: int = 90) -> Fields:
    fields = _header_fields(job)
    fields[b"deadline"] = repr(to_wall(job.deadline)).encode()
    fields[b"enqueued"] = repr(to_wall(job.enqueued)).encode()
    fields[b"reply_to"] = job.reply_to.encode()
    fields.update(encode_frame(job.payload, codec, quality))
    return fields


def _modality(fields: Fields) -> Modality:
    name = _text(fields, b"modality")
    for m in MODALITIES:
        if m == name:
            return m
    raise WireError(f"unknown modality {name!r}")


def job_header(fields: Fields, token: str) -> Job:
    """The routing part of an entry (session, seq, reply_to, times), without the frame.

    Enough to send a drop or error outcome back even when the payload cannot be read.
    """
    if fields.get(b"v") != WIRE_VERSION:
        raise WireError(f"wire version {fields.get(b'v')!r}, this worker reads {WIRE_VERSION!r}")
    if _modality(fields) != "face":
        raise WireError("only face jobs have a wire format in this version")
    pts = fields.get(b"pts")
    return Job(
        session=_text(fields, b"session"),
        seq=int(_num(fields, b"seq")),
        pts=None if pts is None else _num(fields, b"pts"),
        payload=np.empty((0,), np.uint8),
        info=FrameInfo(
            width=int(_num(fields, b"width")),
            height=int(_num(fields, b"height")),
            scale=_num(fields, b"scale"),
            detect=fields.get(b"detect", b"1") != b"0",
        ),
        created=to_mono(_num(fields, b"created")),
        deadline=to_mono(_num(fields, b"deadline")) if b"deadline" in fields else math.inf,
        enqueued=to_mono(_num(fields, b"enqueued")) if b"enqueued" in fields else 0.0,
        reply_to=_text(fields, b"reply_to", ""),
        token=token,
    )


def encode_outcome(outcome: Outcome) -> Fields:
    """An outcome for its ingest node: the job's identity plus what became of it."""
    fields = _header_fields(outcome.job)
    fields[b"token"] = outcome.job.token.encode()
    if isinstance(outcome, Scored):
        result = outcome.result
        fields[b"kind"] = b"scored"
        fields[b"model"] = outcome.model.encode()
        fields[b"boxes"] = np.asarray(result.boxes, "<i4").reshape(-1, 4).tobytes()
        scores = np.asarray(result.scores, "<f4").reshape(len(result.boxes), len(result.classes))
        fields[b"scores"] = scores.tobytes()
        fields[b"classes"] = ",".join(result.classes).encode()
    elif isinstance(outcome, Dropped):
        fields[b"kind"] = b"dropped"
        fields[b"reason"] = outcome.reason.value.encode()
    else:
        fields[b"kind"] = b"failed"
        fields[b"error"] = outcome.error.encode()
    return fields


def decode_outcome(fields: Fields) -> Outcome:
    job = job_header(fields, _text(fields, b"token", ""))
    kind = fields.get(b"kind")
    if kind == b"dropped":
        try:
            return Dropped(job, DropReason(_text(fields, b"reason")))
        except ValueError:
            raise WireError(f"unknown drop reason {fields.get(b'reason')!r}") from None
    if kind == b"failed":
        return Failed(job, fields.get(b"error", b"").decode(errors="replace"))
    if kind != b"scored":
        raise WireError(f"unknown outcome kind {kind!r}")
    classes = tuple(c for c in _text(fields, b"classes").split(",") if c)
    flat = np.frombuffer(fields.get(b"boxes", b""), "<i4")
    scores = np.frombuffer(fields.get(b"scores", b""), "<f4")
    if not classes or flat.size % 4 or scores.size != flat.size // 4 * len(classes):
        raise WireError("fields 'boxes', 'scores' and 'classes' do not agree")
    boxes = [(int(a), int(b), int(c), int(d)) for a, b, c, d in flat.reshape(-1, 4)]
    matrix = scores.reshape(len(boxes), len(classes)).astype(np.float32)
    return Scored(job, _text(fields, b"model", ""), FaceScores(boxes, matrix, classes))
