"""The pieces a wire entry is made of: checked field readers and the media codecs.

Shared by the job and outcome envelope (``wire.py``) and by each modality's own fields
(``emostream/modalities``): a frame travels as JPEG or raw ``uint8`` (``encode_frame``), a
voice window as little-endian float32 or int16 PCM (``encode_window``). Every reader
checks before it allocates and raises only ``WireError`` (``edge`` turns anything else an
entry provokes into one).
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

Fields = dict[bytes, bytes]
MAX_SIDE = 8192  # a larger frame on the stream is malformed, not a reason to allocate
MAX_PIXELS = 4096 * 4096  # payload pixels (48 MiB as BGR): far above any downscaled frame
MAX_SOURCE_SIDE = 32768  # the source frame's width/height a job may claim
SIZE_SLACK = 2  # px between the payload and round(source side * scale)
MAX_WINDOW_SAMPLES = 16000 * 30  # a voice window on the stream: at most 30 s at 16 kHz
MAX_RATE = 192_000
_MAX_NUMBER = 64  # bytes of one numeric field: a number, not a 10 MB string of digits
MAX_TEXT = {b"session": 128, b"reply_to": 256, b"token": 64, b"model": 256, b"classes": 4096}
MAX_TEXT |= {b"track": 128, b"role": 16}
_PCM = {b"f32": "<f4", b"s16": "<i2"}

P = ParamSpec("P")
R = TypeVar("R")


class WireError(ValueError):
    """An entry that is not a job or result this version can read."""


def edge(fn: Callable[P, R]) -> Callable[P, R]:
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


def field_raw(fields: Fields, key: bytes, limit: int) -> bytes:
    raw = fields.get(key)
    if raw is None:
        raise WireError(f"field {key.decode()!r} missing")
    if len(raw) > limit:
        raise WireError(f"field {key.decode()!r} is {len(raw)} bytes, at most {limit}")
    return raw


def field_int(fields: Fields, key: bytes, lo: int, hi: int) -> int:
    raw = field_raw(fields, key, _MAX_NUMBER)
    try:
        value = int(raw)
    except ValueError:
        raise WireError(f"field {key.decode()!r} is not an integer: {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise WireError(f"field {key.decode()!r} is {value}, not in [{lo}, {hi}]")
    return value


def field_num(fields: Fields, key: bytes, *, infinite: bool = False) -> float:
    """A finite number (or +inf where ``infinite``: "no deadline"); never NaN."""
    raw = field_raw(fields, key, _MAX_NUMBER)
    try:
        value = float(raw)
    except ValueError:
        raise WireError(f"field {key.decode()!r} is not a number: {raw[:20]!r}") from None
    if not (math.isfinite(value) or (infinite and value == math.inf)):
        raise WireError(f"field {key.decode()!r} is {value}")
    return value


def field_text(fields: Fields, key: bytes, default: str | None = None) -> str:
    if fields.get(key) is None:
        if default is None:
            raise WireError(f"field {key.decode()!r} missing")
        return default
    raw = field_raw(fields, key, MAX_TEXT.get(key, 256))
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise WireError(f"field {key.decode()!r} is not UTF-8") from None


def field_known(fields: Fields, allowed: set[bytes]) -> None:
    unknown = sorted(k for k in fields if k not in allowed)
    if unknown:
        names = ", ".join(repr(k.decode(errors="replace")[:32]) for k in unknown[:5])
        raise WireError(f"unknown field(s) {names}")


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


@edge
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
        text = field_text(fields, b"shape")
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


@edge
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
