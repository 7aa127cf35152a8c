"""AudioHook audio frames: headerless, 8 kHz, the channels interleaved sample by sample.

``PCMU`` is G.711 μ-law, one byte per sample, decoded through a 256-entry table; ``L16``
is 16-bit signed linear PCM, two bytes per sample, little-endian (as Genesys' reference
implementation reads it). A frame holds whole samples of every channel; its length is
the only thing a server can check. The encoders are for tests and tools that play the
client.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Format = Literal["PCMU", "L16"]
FORMATS: tuple[Format, ...] = ("PCMU", "L16")
RATE = 8000
BYTES_PER_SAMPLE: dict[Format, int] = {"PCMU": 1, "L16": 2}
_BIAS = 0x84
_CLIP = 32635


def _ulaw_table() -> np.ndarray:
    """Each μ-law byte's linear value (ITU-T G.711: the bits are sent inverted)."""
    u = ~np.arange(256, dtype=np.uint8)
    exponent = (u >> 4).astype(np.int32) & 0x07
    mantissa = u.astype(np.int32) & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


ULAW = _ulaw_table()


def decode(data: bytes, fmt: Format, channels: int) -> np.ndarray:
    """``(samples, channels)`` int16 from one frame (``ValueError`` unless it holds whole
    samples of every channel)."""
    samples_in(len(data), fmt, channels)
    if fmt == "PCMU":
        pcm = ULAW[np.frombuffer(data, dtype=np.uint8)]
    else:
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    return pcm.reshape(-1, channels)


def samples_in(size: int, fmt: Format, channels: int) -> int:
    """Samples per channel in a frame of ``size`` bytes, not decoding it (``ValueError``
    unless it holds whole samples of every channel)."""
    step = BYTES_PER_SAMPLE[fmt] * channels
    if size % step:
        raise ValueError(
            f"a {fmt} frame of {channels} channel(s) is a multiple of {step} bytes, not {size}"
        )
    return size // step


def encode_ulaw(pcm: np.ndarray) -> bytes:
    """int16 samples -> μ-law bytes (G.711)."""
    x = pcm.astype(np.int32).reshape(-1)
    sign = (x < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes())


def encode(pcm: np.ndarray, fmt: Format) -> bytes:
    """``(samples, channels)`` int16 -> one interleaved frame."""
    if fmt == "PCMU":
        return encode_ulaw(pcm)
    return bytes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
