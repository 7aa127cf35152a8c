"""Jobs and outcomes as Redis stream entries: flat binary fields, no JSON around pixels.

A face job entry carries the fields of ``Job`` and its ``FrameInfo`` (source size, scale,
whether to detect) as short text fields, and the downscaled BGR frame either as JPEG
(default, quality 90: about 25-60 kB for a 640x360 frame, see docs/ARCHITECTURE.md) or raw
``uint8`` bytes with its shape (``raw``: exact, 691 kB at 640x360). A voice job entry
carries its ``VoiceInfo`` (track, start, end, rate) and the window's samples as
little-endian float32 (``f32``, exact: 96 kB for 1.5 s at 16 kHz) or int16 PCM (``s16``,
half that, quantised to 16 bits as a call's audio already is). An outcome entry says its
``kind`` (scored, dropped, failed) and carries boxes (faces only) and scores as packed
little-endian arrays. Nothing is base64-encoded.

Times on the wire are wall-clock seconds (``time.time()``): ``time.monotonic()`` means
nothing on another machine. Each side converts at its edge, so a result's ``created``
comes back to the ingest node on its own clock and end-to-end latency is exact even when
the worker's clock is off; only the deadline check on the worker depends on clocks being
synchronised (NTP).

Reading is validation: every entry is checked at this edge (version, known field names,
modality, integer and finite ranges, text lengths, a frame's size from its JPEG header or
raw shape before any pixel is allocated, and that size against the job's own; a window's
sample count and codec before its samples are read), and the only exception a reader sees
is ``WireError``, whatever the entry holds.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import cv2
import numpy as np

from emostream.broker.broker_config import AudioCodec, Codec
from emostream.pipeline.jobs import MODALITIES, DropReason, FrameInfo, Job, Modality, VoiceInfo
from emostream.pipeline.outcomes import (
    Dropped,
    FaceScores,
    Failed,
    Outcome,
    Scored,
    VoiceScores,
)

WIRE_VERSION = b"2"  # 2: typed frame fields instead of a JSON ``meta`` (voice: same, added)
Fields = dict[bytes, bytes]
MAX_SIDE = 8192  # a larger frame on the stream is malformed, not a reason to allocate
MAX_PIXELS = 4096 * 4096  # payload pixels (48 MiB as BGR): far above any downscaled frame
MAX_SOURCE_SIDE = 32768  # the source frame's width/height a job may claim
SIZE_SLACK = 2  # px between the payload and round(source side * scale)
MAX_FACES = 1024  # boxes one outcome may carry
MAX_SEQ = 2**63 - 1
MAX_WINDOW_SAMPLES = 16000 * 30  # a voice window on the stream: at most 30 s at 16 kHz
MAX_RATE = 192_000
MAX_CLASSES = 256
_MAX_NUMBER = 64  # bytes of one numeric field: a number, not a 10 MB string of digits
_MAX_TEXT = {b"session": 128, b"reply_to": 256, b"token": 64, b"model": 256, b"classes": 4096}
_MAX_TEXT |= {b"track": 128}
_PCM = {b"f32": "<f4", b"s16": "<i2"}

_HEADER = {b"v", b"session", b"modality", b"seq", b"created", b"width", b"height"}
_HEADER |= {b"scale", b"detect", b"pts", b"track", b"start", b"end", b"rate"}
JOB_FIELDS = _HEADER | {b"deadline", b"enqueued", b"reply_to", b"codec", b"data", b"shape"}
OUTCOME_FIELDS = _HEADER | {b"token", b"kind", b"model", b"boxes", b"scores", b"classes"}
OUTCOME_FIELDS |= {b"reason", b"error"}

P = ParamSpec("P")
R = TypeVar("R")


class WireError(ValueError):
    """An entry that is not a job or result this version can read."""


def _edge(fn: Callable[P, R]) -> Callable[P, R]:
    """Whatever an entry provokes while being read is that entry's fault: a ``WireError``.

    The checks below raise ``WireError`` themselves; this is the one place that turns
    anything they missed (an ``OverflowError``, a ``RecursionError``, a library's own
    error) into one too, so a reader only ever has ``WireError`` to handle.
    """

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except WireError:
            raise
        except Exception as exc:
            raise WireError(f"unreadable entry ({type(exc).__name__}: {exc})") from exc

    return guarded


def to_wall(mono: float) -> float:
    return mono if math.isinf(mono) else time.time() - (time.monotonic() - mono)


def to_mono(wall: float) -> float:
    return wall if math.isinf(wall) else time.monotonic() - (time.time() - wall)


def _raw(fields: Fields, key: bytes, limit: int) -> bytes:
    raw = fields.get(key)
    if raw is None:
        raise WireError(f"field {key.decode()!r} missing")
    if len(raw) > limit:
        raise WireError(f"field {key.decode()!r} is {len(raw)} bytes, at most {limit}")
    return raw


def _int(fields: Fields, key: bytes, lo: int, hi: int) -> int:
    raw = _raw(fields, key, _MAX_NUMBER)
    try:
        value = int(raw)
    except ValueError:
        raise WireError(f"field {key.decode()!r} is not an integer: {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise WireError(f"field {key.decode()!r} is {value}, not in [{lo}, {hi}]")
    return value


def _num(fields: Fields, key: bytes, *, infinite: bool = False) -> float:
    """A finite number (or +inf where ``infinite``: "no deadline"); never NaN."""
    raw = _raw(fields, key, _MAX_NUMBER)
    try:
        value = float(raw)
    except ValueError:
        raise WireError(f"field {key.decode()!r} is not a number: {raw[:20]!r}") from None
    if not (math.isfinite(value) or (infinite and value == math.inf)):
        raise WireError(f"field {key.decode()!r} is {value}")
    return value


def _text(fields: Fields, key: bytes, default: str | None = None) -> str:
    if fields.get(key) is None:
        if default is None:
            raise WireError(f"field {key.decode()!r} missing")
        return default
    raw = _raw(fields, key, _MAX_TEXT.get(key, 256))
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise WireError(f"field {key.decode()!r} is not UTF-8") from None


def _known(fields: Fields, allowed: set[bytes]) -> None:
    unknown = sorted(k for k in fields if k not in allowed)
    if unknown:
        names = ", ".join(repr(k.decode(errors="replace")[:32]) for k in unknown[:5])
        raise WireError(f"unknown field(s) {names}")


def payload_size(info: FrameInfo) -> tuple[int, int]:
    """(width, height) of the payload a job's frame info implies: its downscaled size."""
    return round(info.width * info.scale), round(info.height * info.scale)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOFn), without decoding anything."""
    if data[:2] != b"\xff\xd8":
        raise WireError(f"'data' is not a JPEG image ({len(data)} bytes, no SOI marker)")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise WireError(f"'data' is not a JPEG image (no marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 <= n:
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        if length < 2:
            break
        i += 2 + length
    raise WireError(f"'data' is not a JPEG image ({len(data)} bytes, no frame header)")


def _check_size(width: int, height: int, expect: tuple[int, int] | None) -> None:
    """Refuse a frame before allocating it: too big, or not the size its job says."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise WireError(f"frame of {width}x{height} refused (at most {MAX_SIDE} a side)")
    if expect is not None and (
        abs(width - expect[0]) > SIZE_SLACK or abs(height - expect[1]) > SIZE_SLACK
    ):
        raise WireError(f"frame is {width}x{height}, its job says {expect[0]}x{expect[1]}")


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


@_edge
def decode_frame(fields: Fields, expect: tuple[int, int] | None = None) -> np.ndarray:
    """The pixels of a job entry; ``expect`` (width, height) is the size its header implies.

    The size is read from the JPEG header or the raw shape and checked first, so a small
    entry that claims a huge frame is refused before anything is allocated.
    """
    codec = fields.get(b"codec")
    data = fields.get(b"data")
    if data is None:
        raise WireError("field 'data' missing")
    if codec == b"jpeg":
        width, height = jpeg_size(data)
        _check_size(width, height, expect)
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise WireError(f"'data' is not a JPEG image ({len(data)} bytes)")
        if frame.shape[:2] != (height, width):
            raise WireError(f"JPEG decoded to {frame.shape[:2]}, its header says {height}x{width}")
        return frame
    if codec == b"raw":
        text = _text(fields, b"shape")
        try:
            shape = tuple(int(d) for d in text.split(","))
        except ValueError:
            raise WireError("field 'shape' is not a list of integers") from None
        if len(shape) not in (2, 3):
            raise WireError(f"bad frame shape {shape}")
        _check_size(shape[1], shape[0], expect)
        if len(shape) == 3 and shape[2] not in (1, 3):
            raise WireError(f"bad channel count in shape {shape}")
        if math.prod(shape) != len(data):
            raise WireError(f"shape {shape} does not match {len(data)} bytes")
        return np.frombuffer(data, np.uint8).reshape(shape)
    raise WireError(f"unknown codec {codec!r}")


def encode_window(samples: np.ndarray, codec: AudioCodec) -> Fields:
    """A voice window's samples (float32 in [-1, 1]) as ``f32`` or ``s16`` PCM bytes."""
    x = np.asarray(samples)
    if x.dtype != np.float32 or x.ndim != 1 or x.size == 0:
        raise ValueError(f"not a float32 window: shape {x.shape}, dtype {x.dtype}")
    if codec == "s16":
        pcm = np.clip(np.nan_to_num(x), -1.0, 1.0) * 32767.0
        return {b"codec": b"s16", b"data": np.round(pcm).astype("<i2").tobytes()}
    return {b"codec": b"f32", b"data": x.astype("<f4").tobytes()}


@_edge
def decode_window(fields: Fields) -> np.ndarray:
    """The float32 samples of a voice job entry; its codec and length are checked first."""
    codec, data = fields.get(b"codec"), fields.get(b"data")
    if data is None:
        raise WireError("field 'data' missing")
    dtype = _PCM.get(codec or b"")
    if dtype is None:
        raise WireError(f"unknown audio codec {codec!r:.20}")
    size = np.dtype(dtype).itemsize
    if len(data) % size or not 0 < len(data) // size <= MAX_WINDOW_SAMPLES:
        raise WireError(
            f"'data' of {len(data)} bytes is not 1 to {MAX_WINDOW_SAMPLES} {dtype} samples"
        )
    pcm = np.frombuffer(data, dtype)
    if codec == b"s16":
        return pcm.astype(np.float32) / 32768.0
    return pcm.astype(np.float32)


def decode_payload(fields: Fields, job: Job) -> np.ndarray:
    """The payload of a job entry whose header ``job`` was read: a frame or a window."""
    if isinstance(job.info, VoiceInfo):
        return decode_window(fields)
    return decode_frame(fields, payload_size(job.frame))


def _header_fields(job: Job) -> Fields:
    fields: Fields = {
        b"v": WIRE_VERSION,
        b"session": job.session.encode(),
        b"modality": job.modality.encode(),
        b"seq": str(job.seq).encode(),
        b"created": repr(to_wall(job.created)).encode(),
    }
    info = job.info
    if isinstance(info, VoiceInfo):
        fields[b"track"] = info.track.encode()
        fields[b"start"] = repr(info.start).encode()
        fields[b"end"] = repr(info.end).encode()
        fields[b"rate"] = str(info.sample_rate).encode()
    else:
        fields[b"width"] = str(info.width).encode()
        fields[b"height"] = str(info.height).encode()
        fields[b"scale"] = repr(info.scale).encode()
        fields[b"detect"] = b"1" if info.detect else b"0"
    if job.pts is not None:
        fields[b"pts"] = repr(job.pts).encode()
    return fields


def encode_job(
    job: Job, codec: Codec = "jpeg", quality: int = 90, audio: AudioCodec = "f32"
) -> Fields:
    """A job entry: a face job's frame as ``codec``, a voice job's window as ``audio``."""
    fields = _header_fields(job)
    fields[b"deadline"] = repr(to_wall(job.deadline)).encode()
    fields[b"enqueued"] = repr(to_wall(job.enqueued)).encode()
    fields[b"reply_to"] = job.reply_to.encode()
    if job.modality == "voice":
        fields.update(encode_window(job.payload, audio))
    else:
        fields.update(encode_frame(job.payload, codec, quality))
    return fields


def _modality(fields: Fields) -> Modality:
    name = _text(fields, b"modality")
    for m in MODALITIES:
        if m == name:
            return m
    raise WireError(f"unknown modality {name!r}")


def _header(fields: Fields, token: str, allowed: set[bytes]) -> Job:
    if fields.get(b"v") != WIRE_VERSION:
        raise WireError(f"wire version {fields.get(b'v')!r:.20}, this one reads {WIRE_VERSION!r}")
    _known(fields, allowed)
    info = _voice_info(fields) if _modality(fields) == "voice" else _frame_info(fields)
    return Job(
        session=_text(fields, b"session"),
        seq=_int(fields, b"seq", 0, MAX_SEQ),
        pts=_num(fields, b"pts") if b"pts" in fields else None,
        payload=np.empty((0,), np.uint8),
        info=info,
        created=to_mono(_num(fields, b"created")),
        deadline=to_mono(_num(fields, b"deadline", infinite=True))
        if b"deadline" in fields
        else math.inf,
        enqueued=to_mono(_num(fields, b"enqueued")) if b"enqueued" in fields else 0.0,
        reply_to=_text(fields, b"reply_to", ""),
        token=token,
    )


_FACE_ONLY = (b"width", b"height", b"scale", b"detect")
_VOICE_ONLY = (b"track", b"start", b"end", b"rate")


def _frame_info(fields: Fields) -> FrameInfo:
    stray = [k.decode() for k in _VOICE_ONLY if k in fields]
    if stray:
        raise WireError(f"a face job with voice field(s) {stray}")
    detect = fields.get(b"detect", b"1")
    if detect not in (b"0", b"1"):
        raise WireError(f"field 'detect' is {detect[:20]!r}, not 0 or 1")
    scale = _num(fields, b"scale")
    if not 0 < scale <= 1:
        raise WireError(f"field 'scale' is {scale}, not in (0, 1]")
    return FrameInfo(
        width=_int(fields, b"width", 1, MAX_SOURCE_SIDE),
        height=_int(fields, b"height", 1, MAX_SOURCE_SIDE),
        scale=scale,
        detect=detect == b"1",
    )


def _voice_info(fields: Fields) -> VoiceInfo:
    stray = [k.decode() for k in _FACE_ONLY if k in fields]
    if stray:
        raise WireError(f"a voice job with face field(s) {stray}")
    start, end = _num(fields, b"start"), _num(fields, b"end")
    if not end > start:
        raise WireError(f"fields 'start' {start} and 'end' {end} are not a time span")
    return VoiceInfo(
        track=_text(fields, b"track"),
        start=start,
        end=end,
        sample_rate=_int(fields, b"rate", 1, MAX_RATE),
    )


@_edge
def job_header(fields: Fields, token: str) -> Job:
    """The routing part of a job entry (session, seq, reply_to, times), without the frame.

    Enough to send a drop or error outcome back even when the payload cannot be read.
    Every field is checked (version, known names, modality, ranges, finite numbers);
    anything else is a ``WireError``.
    """
    return _header(fields, token, JOB_FIELDS)


def encode_outcome(outcome: Outcome) -> Fields:
    """An outcome for its ingest node: the job's identity plus what became of it."""
    fields = _header_fields(outcome.job)
    fields[b"token"] = outcome.job.token.encode()
    if isinstance(outcome, Scored):
        result = outcome.result
        fields[b"kind"] = b"scored"
        fields[b"model"] = outcome.model.encode()
        rows = 1
        if isinstance(result, FaceScores):
            fields[b"boxes"] = np.asarray(result.boxes, "<i4").reshape(-1, 4).tobytes()
            rows = len(result.boxes)
        scores = np.asarray(result.scores, "<f4").reshape(rows, len(result.classes))
        fields[b"scores"] = scores.tobytes()
        fields[b"classes"] = ",".join(result.classes).encode()
    elif isinstance(outcome, Dropped):
        fields[b"kind"] = b"dropped"
        fields[b"reason"] = outcome.reason.value.encode()
    else:
        fields[b"kind"] = b"failed"
        fields[b"error"] = outcome.error.encode()
    return fields


@_edge
def decode_outcome(fields: Fields) -> Outcome:
    """An outcome entry of a results stream; anything unreadable is a ``WireError``."""
    job = _header(fields, _text(fields, b"token", ""), OUTCOME_FIELDS)
    kind = fields.get(b"kind")
    if kind == b"dropped":
        try:
            return Dropped(job, DropReason(_text(fields, b"reason")))
        except ValueError:
            raise WireError(f"unknown drop reason {fields.get(b'reason')!r:.40}") from None
    if kind == b"failed":
        return Failed(job, fields.get(b"error", b"")[:2000].decode(errors="replace"))
    if kind != b"scored":
        raise WireError(f"unknown outcome kind {kind!r:.40}")
    classes = tuple(c for c in _text(fields, b"classes").split(",") if c)
    if not 0 < len(classes) <= MAX_CLASSES:
        raise WireError(f"field 'classes' names {len(classes)} classes")
    if isinstance(job.info, VoiceInfo):
        if b"boxes" in fields:
            raise WireError("a voice outcome with field 'boxes'")
        row = np.frombuffer(fields.get(b"scores", b""), "<f4")
        if row.size != len(classes):
            raise WireError(f"field 'scores' holds {row.size} values for {len(classes)} classes")
        if not np.isfinite(row).all():
            raise WireError("field 'scores' holds a NaN or an infinity")
        voice = VoiceScores(row.reshape(1, -1).astype(np.float32), classes)
        return Scored(job, _text(fields, b"model", ""), voice)
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
    return Scored(job, _text(fields, b"model", ""), FaceScores(boxes, matrix, classes))
