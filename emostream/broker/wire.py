"""Jobs and results as Redis stream entries: flat binary fields, no JSON around pixels.

A job entry carries the downscaled BGR frame either as JPEG (default, quality 90: about
25-60 kB for a 640x360 frame, see docs/ARCHITECTURE.md) or raw ``uint8`` bytes with its
shape (``raw``: exact, 691 kB at 640x360), plus a few small text fields. A result entry
carries boxes and scores as packed little-endian arrays. Nothing is base64-encoded.

Times on the wire are wall-clock seconds (``time.time()``): ``time.monotonic()`` means
nothing on another machine. Each side converts at its edge, so a result's ``created``
comes back to the ingest node on its own clock and end-to-end latency is exact even when
the worker's clock is off; only the deadline check on the worker depends on clocks being
synchronised (NTP).
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np

from emostream.broker.base import DropReason, Job, Modality, Result
from emostream.broker.config import Codec

WIRE_VERSION = b"1"
Fields = dict[bytes, bytes]
MAX_SIDE = 8192  # a larger frame on the stream is malformed, not a reason to allocate


class WireError(ValueError):
    """An entry that is not a job or result this version can read."""


def to_wall(mono: float) -> float:
    return time.time() - (time.monotonic() - mono)


def to_mono(wall: float) -> float:
    return time.monotonic() - (time.time() - wall)


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


def encode_job(job: Job, codec: Codec = "jpeg", quality: int = 90) -> Fields:
    fields: Fields = {
        b"v": WIRE_VERSION,
        b"session": job.session.encode(),
        b"modality": job.modality.encode(),
        b"seq": str(job.seq).encode(),
        b"pts": repr(job.pts).encode(),
        b"created": repr(to_wall(job.created)).encode(),
        b"deadline": repr(to_wall(job.deadline)).encode(),
        b"enqueued": repr(to_wall(job.enqueued)).encode(),
        b"reply_to": job.reply_to.encode(),
        b"meta": json.dumps(job.meta, separators=(",", ":")).encode(),
    }
    fields.update(encode_frame(job.payload, codec, quality))
    return fields


def job_header(fields: Fields, token: str) -> Job:
    """The routing part of an entry (session, seq, reply_to, times), without the frame.

    Enough to send a drop or error result back even when the payload cannot be read.
    """
    if fields.get(b"v") != WIRE_VERSION:
        raise WireError(f"wire version {fields.get(b'v')!r}, this worker reads {WIRE_VERSION!r}")
    modality = _text(fields, b"modality")
    if modality not in ("face", "voice"):
        raise WireError(f"unknown modality {modality!r}")
    modality_: Modality = "face" if modality == "face" else "voice"
    try:
        meta = json.loads(_text(fields, b"meta", "{}"))
        if not isinstance(meta, dict):
            raise WireError("field 'meta' is not an object")
        meta = {str(k): float(v) for k, v in meta.items()}
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise WireError(f"field 'meta': {exc}") from None
    return Job(
        session=_text(fields, b"session"),
        modality=modality_,
        seq=int(_num(fields, b"seq")),
        pts=_num(fields, b"pts"),
        payload=np.empty((0,), np.uint8),
        created=to_mono(_num(fields, b"created")),
        deadline=to_mono(_num(fields, b"deadline")),
        meta=meta,
        enqueued=to_mono(_num(fields, b"enqueued")),
        reply_to=_text(fields, b"reply_to"),
        token=token,
    )


def decode_job(fields: Fields, token: str) -> Job:
    job = job_header(fields, token)
    job.payload = decode_frame(fields)
    return job


def encode_result(r: Result) -> Fields:
    fields: Fields = {
        b"v": WIRE_VERSION,
        b"session": r.session.encode(),
        b"modality": r.modality.encode(),
        b"seq": str(r.seq).encode(),
        b"pts": repr(r.pts).encode(),
        b"created": repr(to_wall(r.created)).encode(),
        b"meta": json.dumps(r.meta, separators=(",", ":")).encode(),
        b"model": r.model.encode(),
        b"queue_s": repr(r.queue_s).encode(),
        b"inference_s": repr(r.inference_s).encode(),
    }
    if r.boxes:
        fields[b"boxes"] = np.asarray(r.boxes, "<i4").tobytes()
    if r.scores is not None:
        scores = np.asarray(r.scores, "<f4")
        fields[b"scores"] = scores.tobytes()
        fields[b"scores_shape"] = ",".join(str(d) for d in scores.shape).encode()
    if r.classes:
        fields[b"classes"] = ",".join(r.classes).encode()
    if r.dropped is not None:
        fields[b"dropped"] = r.dropped.value.encode()
    if r.error is not None:
        fields[b"error"] = r.error.encode()
    return fields


def decode_result(fields: Fields) -> Result:
    header = job_header(
        {**fields, b"deadline": b"0", b"enqueued": b"0", b"reply_to": b""}, token=""
    )
    boxes: list[tuple[int, int, int, int]] = []
    if b"boxes" in fields:
        flat = np.frombuffer(fields[b"boxes"], "<i4")
        if flat.size % 4:
            raise WireError("field 'boxes' is not a list of [x, y, w, h]")
        boxes = [(int(a), int(b), int(c), int(d)) for a, b, c, d in flat.reshape(-1, 4)]
    scores = None
    if b"scores" in fields:
        shape = tuple(int(d) for d in _text(fields, b"scores_shape").split(","))
        scores = np.frombuffer(fields[b"scores"], "<f4").reshape(shape).astype(np.float32)
    dropped = fields.get(b"dropped")
    try:
        reason = DropReason(dropped.decode()) if dropped else None
    except ValueError:
        raise WireError(f"unknown drop reason {dropped!r}") from None
    error = fields.get(b"error")
    return Result.of(
        header,
        model=_text(fields, b"model", ""),
        boxes=boxes,
        scores=scores,
        classes=[c for c in _text(fields, b"classes", "").split(",") if c],
        dropped=reason,
        error=error.decode(errors="replace") if error is not None else None,
        queue_s=_num(fields, b"queue_s"),
        inference_s=_num(fields, b"inference_s"),
    )
