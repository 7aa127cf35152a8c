"""Augmentation for the voice model: waveforms in numpy, SpecAugment on log-mel in torch.

On the waveform (before the numpy log-mel, so serving's features see the same kind of
signal): a random crop of the window inside the clip's speech (time shift), gain, noise at
a random signal-to-noise ratio and spectral tilt (white to brown), and the telephone band:
300 Hz high-pass, 8 kHz resampling and G.711 companding (mu-law or A-law, 8 bits), then
back to 16 kHz, so the model has heard calls. On the features: frequency and time masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.signal import butter, resample_poly, sosfilt

from emostream.stream.audio import SAMPLE_RATE
from emostream.training.train_config import Strict

TELEPHONE_RATE = 8000
_MU = 255.0
_A = 87.6


class AugmentConfig(Strict):
    shift: float = Field(
        default=0.25, ge=0, le=1.5, description="seconds a crop may start before the speech"
    )
    gain_db: float = Field(default=6.0, ge=0, le=30, description="gain range +- dB")
    noise: float = Field(default=0.5, ge=0, le=1, description="chance of added noise")
    snr_db: tuple[float, float] = Field(default=(5.0, 30.0), description="noise SNR range")
    telephone: float = Field(default=0.3, ge=0, le=1, description="chance of the phone band")
    freq_masks: int = Field(default=2, ge=0, le=4, description="SpecAugment frequency masks")
    freq_width: int = Field(default=8, ge=0, le=32, description="mels per mask, at most")
    time_masks: int = Field(default=2, ge=0, le=4, description="SpecAugment time masks")
    time_width: int = Field(default=20, ge=0, le=74, description="frames per mask, at most")
    speeds: list[float] = Field(
        default=[0.9, 1.0, 1.1],
        description="speed perturbation: each window is played at one of these speeds "
        "(tempo and pitch together, as Kaldi's speed perturbation); [1.0] turns it off",
    )

    @field_validator("speeds")
    @classmethod
    def _tenths(cls, value: list[float]) -> list[float]:
        if not value or any(
            not 0.5 <= v <= 2.0 or abs(v * 10 - round(v * 10)) > 1e-9 for v in value
        ):
            raise ValueError("speeds are tenths between 0.5 and 2.0, e.g. [0.9, 1.0, 1.1]")
        return value


def _compand(x: np.ndarray, law: Literal["mu", "a"]) -> np.ndarray:
    """G.711's curve, quantised to 8 bits and expanded back (what the line carries)."""
    x = np.clip(x, -1.0, 1.0)
    mag = np.abs(x)
    if law == "mu":
        y = np.log1p(_MU * mag) / np.log1p(_MU)
    else:
        small = mag < 1 / _A
        y = np.where(small, _A * mag, 1 + np.log(np.maximum(_A * mag, 1e-12))) / (1 + np.log(_A))
    y = np.round(y * 127) / 127  # 7 bits of magnitude + the sign bit
    if law == "mu":
        mag = np.expm1(y * np.log1p(_MU)) / _MU
    else:
        t = y * (1 + np.log(_A))
        mag = np.where(t < 1, t / _A, np.exp(t - 1) / _A)
    out: np.ndarray = (np.sign(x) * mag).astype(np.float32)
    return out


_HIGHPASS = butter(4, 300, "highpass", fs=TELEPHONE_RATE, output="sos")


def telephone(wave: np.ndarray, law: Literal["mu", "a"] = "mu") -> np.ndarray:
    """16 kHz speech as it arrives from a G.711 call (same length, 16 kHz again)."""
    narrow = resample_poly(wave.astype(np.float64), 1, SAMPLE_RATE // TELEPHONE_RATE)
    narrow = sosfilt(_HIGHPASS, narrow)
    back = resample_poly(_compand(narrow, law), SAMPLE_RATE // TELEPHONE_RATE, 1)
    out = np.zeros(len(wave), np.float32)
    out[: min(len(wave), len(back))] = back[: len(wave)]
    return out


def speed_window(take: Callable[[int], np.ndarray], speed: float, window: int) -> np.ndarray:
    """A ``window``-sample window played at ``speed``: ``take(n)`` gives n samples of the
    clip, which are resampled to ``window`` (1.1 = 10 % faster and higher)."""
    tenths = round(speed * 10)
    if tenths == 10:
        return take(window)
    raw = take(round(window * speed))
    out = np.zeros(window, np.float32)
    fast = resample_poly(raw.astype(np.float64), 10, tenths)[:window]
    out[: len(fast)] = fast
    return out


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a random 1/f^alpha tilt (alpha 0 white .. 2 brown)."""
    spec = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-rng.uniform(0.0, 2.0) / 2)
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    out: np.ndarray = (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)
    return out


def augment_wave(wave: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One training window: gain, then noise at the caller's end, then maybe the line."""
    x: np.ndarray = wave * np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
    if rng.random() < cfg.noise:
        power = float(np.mean(x**2)) + 1e-10
        snr = rng.uniform(*cfg.snr_db)
        x = x + _noise(len(x), rng) * np.float32(np.sqrt(power / 10 ** (snr / 10)))
    if rng.random() < cfg.telephone:
        peak = float(np.abs(x).max()) + 1e-9
        x = x * np.float32(rng.uniform(0.1, 0.9) / peak)  # the line's level after AGC
        x = telephone(x, "mu" if rng.random() < 0.5 else "a")
    out: np.ndarray = np.clip(x, -1.0, 1.0).astype(np.float32)
    return out


def spec_augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Zero (the standardised mean) random mel bands and frame spans of (N, 1, mels, T)."""
    n, _, mels, frames = x.shape
    keep = torch.ones(n, 1, mels, frames, dtype=torch.bool)
    for count, width, size, axis in (
        (cfg.freq_masks, cfg.freq_width, mels, 2),
        (cfg.time_masks, cfg.time_width, frames, 3),
    ):
        for _ in range(count):
            w = torch.randint(0, width + 1, (n,), generator=gen)
            start = (torch.rand(n, generator=gen) * (size - w).clamp(min=1)).long()
            pos = torch.arange(size)
            band = (pos[None] >= start[:, None]) & (pos[None] < (start + w)[:, None])
            shape = (n, 1, size, 1) if axis == 2 else (n, 1, 1, size)
            keep &= ~band.view(shape)
    return x * keep.to(x.device, x.dtype)
