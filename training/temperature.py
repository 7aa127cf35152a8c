"""Fitting one temperature to held-out logits: the ``T`` that minimises their negative
log-likelihood (Guo et al. 2017, "On Calibration of Modern Neural Networks").

Logits come as (N, views, classes): a graph with several Softmax nodes whose outputs are
averaged (the face graph's mirror views) has its probability at ``T`` as the mean of each
view's ``softmax(z / T)``, which is what the edited graph computes (:mod:`onnx_temperature`).
A file of probabilities is one view of ``log p`` (a row's constant does not change a
softmax). The search is Brent's bounded method over ``log T``: deterministic, no seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from emostream.models.runner import softmax

#: the search range of T: wide enough for any network we train, finite so a degenerate set
#: (every sample right, or none) gives an answer that says it hit the edge
BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class Fit:
    temperature: float
    nll_before: float  # at T = 1
    nll_after: float
    samples: int

    @property
    def at_bound(self) -> bool:
        """The optimum lies at the edge of :data:`BOUNDS` (the data says "as far as you go")."""
        return any(abs(np.log(self.temperature / b)) < 1e-3 for b in BOUNDS)


def as_views(logits: np.ndarray) -> np.ndarray:
    """(N, classes) or (N, views, classes) logits as (N, views, classes) float64."""
    z = np.asarray(logits, np.float64)
    return z[:, None, :] if z.ndim == 2 else z


def from_probabilities(probs: np.ndarray) -> np.ndarray:
    """(N, 1, classes) logits equivalent to probabilities: ``log p`` (0 clipped to 1e-12)."""
    return as_views(np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)))


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(N, classes): the mean over views of ``softmax(z / T)``."""
    z = as_views(logits)
    n, views, classes = z.shape
    p = softmax(z.reshape(n * views, classes) / temperature)
    out: np.ndarray = p.reshape(n, views, classes).mean(axis=1)
    return out


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes at ``temperature``."""
    p = probabilities(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-300, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> Fit:
    """The temperature in :data:`BOUNDS` that minimises :func:`nll` on these samples."""
    z, y = as_views(logits), np.asarray(labels, np.int64)
    if z.ndim != 3 or len(z) != len(y) or not len(y):
        raise ValueError(f"need (N, classes) logits and N labels, got {z.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= z.shape[2]:
        raise ValueError(f"labels must lie in 0..{z.shape[2] - 1}")
    if not np.isfinite(z).all():
        raise ValueError("the logits are not all finite")
    lo, hi = np.log(BOUNDS)
    found = minimize_scalar(
        lambda s: nll(z, y, float(np.exp(s))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    t = float(np.exp(found.x))
    return Fit(t, nll(z, y, 1.0), nll(z, y, t), len(y))
