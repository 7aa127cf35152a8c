"""Log-mel features in numpy: the one feature function of the voice model.

Training (``training/voice_*``) and serving (the voice analyzer) call the same
``log_mel``, with the spec the model card carries, so a model can never be fed features
computed differently from the ones it learnt on, and inference needs no torch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits


class LogMelSpec(BaseModel):
    """How a 16 kHz mono window becomes the (mels, frames) image the voice model reads."""

    sample_rate: int = Field(default=16000, description="Hz of the waveform the spec expects")
    n_fft: int = Field(default=512, ge=16, description="FFT size (samples)")
    win_length: int = Field(default=400, ge=16, description="Hann window, 25 ms at 16 kHz")
    hop_length: int = Field(default=160, ge=1, description="frame hop, 10 ms at 16 kHz")
    n_mels: int = Field(default=64, ge=1)
    fmin: float = Field(default=50.0, ge=0.0)
    fmax: float = Field(default=8000.0, gt=0.0)
    normalize: bool = Field(
        default=True,
        description="standardise each window (zero mean, unit variance over the whole "
        "window): the level of a call or a microphone then does not shift the features",
    )

    def frames(self, samples: int) -> int:
        """How many feature frames a window of ``samples`` samples gives (no padding)."""
        if samples < self.win_length:
            return 1
        return 1 + (samples - self.win_length) // self.hop_length


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular HTK-mel filters, each with unit area."""
    fmax = min(fmax, sample_rate / 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (bins[None, :] - lower) / np.maximum(centre - lower, 1e-9)
    fall = (upper - bins[None, :]) / np.maximum(upper - centre, 1e-9)
    bank = np.maximum(0.0, np.minimum(rise, fall))
    bank *= 2.0 / np.maximum(upper - lower, 1e-9)
    out: np.ndarray = bank.astype(np.float32)
    return out


@lru_cache(maxsize=8)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    win = np.zeros(n_fft, np.float32)
    start = (n_fft - win_length) // 2
    win[start : start + win_length] = np.hanning(win_length + 1)[:-1]
    return win


def one_blas_thread() -> None:
    """Keep numpy's BLAS (the filterbank product below, its one user) on one thread for
    the rest of the process. Serving calls it with a few windows at a time: OpenBLAS's
    extra threads gain nothing there, yet busy-wait after every call, which cost the
    server a third of a core at 40 calls (docs/BENCHMARKS.md, "Calls")."""
    threadpool_limits(limits=1, user_api="blas")


def log_mel(waves: np.ndarray, spec: LogMelSpec) -> np.ndarray:
    """(N, samples) float waveforms in [-1, 1] -> (N, n_mels, frames) float32 features.

    One window per row, all of one length. A 1-D waveform is taken as one window.
    """
    x = np.asarray(waves, np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"waveforms must be (N, samples), got {x.shape}")
    if x.shape[1] < spec.win_length:
        x = np.pad(x, ((0, 0), (0, spec.win_length - x.shape[1])))
    n = spec.frames(x.shape[1])
    # frames as a strided view, centred in an n_fft buffer
    framed = np.lib.stride_tricks.sliding_window_view(x, spec.win_length, axis=1)
    framed = framed[:, : (n - 1) * spec.hop_length + 1 : spec.hop_length]
    pad = (spec.n_fft - spec.win_length) // 2
    buf = np.zeros((x.shape[0], n, spec.n_fft), np.float32)
    buf[:, :, pad : pad + spec.win_length] = framed
    buf *= _window(spec.n_fft, spec.win_length)
    power = np.abs(np.fft.rfft(buf, axis=-1)).astype(np.float32) ** 2
    bank = _filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.fmin, spec.fmax)
    mel = power @ bank.T  # (N, frames, mels): one BLAS call
    out = np.ascontiguousarray(np.log(mel + 1e-6, dtype=np.float32).transpose(0, 2, 1))
    if spec.normalize:
        mean = out.mean(axis=(1, 2), keepdims=True)
        std = out.std(axis=(1, 2), keepdims=True)
        out = (out - mean) / (std + 1e-5)
    result: np.ndarray = out.astype(np.float32, copy=False)
    return result
