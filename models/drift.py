"""Class drift: a sliding window of recent predictions against the model card's reference mix.

A model whose inputs shift (new camera, lighting, population) usually predicts a different
class mix long before anyone measures its accuracy again. Each process keeps a window of
its own recent top-1 predictions per model and exports, at scrape time, how far the
window's class distribution is from the card's ``reference_distribution`` (the model's
predictions on its validation set): population stability index and Jensen-Shannon
distance. A card without a reference is reported as such, never compared with a guess.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field, model_validator

from emostream import metrics
from emostream.fields import Unset

log = logging.getLogger("emostream.drift")

#: Probability floor for PSI. PSI has ln(p/q): a class absent from the window (or from the
#: reference) makes it infinite, and a small window misses rare classes all the time.
DEFAULT_EPS = 1e-4


def _floored(v: np.ndarray, eps: float) -> np.ndarray:
    v = np.maximum(v, eps)
    out: np.ndarray = v / v.sum()
    return out


def _as_distribution(v: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or np.any(a < 0) or not np.isfinite(a).all():
        raise ValueError(f"{what} must be a non-empty vector of non-negative finite numbers")
    total = a.sum()
    if total <= 0:
        raise ValueError(f"{what} sums to 0")
    out: np.ndarray = a / total
    return out


def _check_pair(actual: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _as_distribution(actual, "actual")
    q = _as_distribution(expected, "expected")
    if p.shape != q.shape:
        raise ValueError(f"actual has {p.size} classes, expected {q.size}")
    return p, q


def psi(
    actual: Sequence[float] | np.ndarray,
    expected: Sequence[float] | np.ndarray,
    eps: float = DEFAULT_EPS,
) -> float:
    """Population stability index ``Σ (p_i - q_i)·ln(p_i / q_i)``, p = window, q = reference.

    Both vectors are normalised, every bin is floored at ``eps`` and they are normalised
    again: without the floor one empty bin makes PSI infinite. PSI ≥ 0, 0 iff p = q.
    """
    p, q = _check_pair(np.asarray(actual), np.asarray(expected))
    p, q = _floored(p, eps), _floored(q, eps)
    return float(max(0.0, np.sum((p - q) * np.log(p / q))))


def _kl2(p: np.ndarray, m: np.ndarray) -> float:
    """KL(p ‖ m) in bits over p's support (0·log 0 = 0; m > 0 wherever p > 0)."""
    s = p > 0
    return float(np.sum(p[s] * np.log2(p[s] / m[s])))


def js_distance(
    actual: Sequence[float] | np.ndarray, expected: Sequence[float] | np.ndarray
) -> float:
    """Jensen-Shannon distance, base 2: ``sqrt(½ KL(p‖m) + ½ KL(q‖m))``, m = (p + q) / 2.

    Symmetric, in [0, 1] (1 = disjoint supports), finite without smoothing since m > 0
    wherever p or q is; equal to ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    """
    p, q = _check_pair(np.asarray(actual), np.asarray(expected))
    m = (p + q) / 2
    jsd = 0.5 * _kl2(p, m) + 0.5 * _kl2(q, m)
    return float(min(1.0, math.sqrt(max(0.0, jsd))))


class DriftConfig(BaseModel):
    """``EMOSTREAM_DRIFT__*``: the window holds at most ``size`` predictions and/or those of
    the last ``seconds`` (either may be unset, e.g. by an empty variable, not both)."""

    size: Annotated[int | None, Unset] = Field(
        default=1000, ge=1, description="the last N predictions"
    )
    seconds: Annotated[float | None, Unset] = Field(
        default=600.0, gt=0, description="predictions of the last S seconds"
    )

    @model_validator(mode="after")
    def _bounded(self) -> DriftConfig:
        if self.size is None and self.seconds is None:
            raise ValueError(
                "the drift window needs a size, a time span or both "
                "(EMOSTREAM_DRIFT_WINDOW_SIZE / EMOSTREAM_DRIFT_WINDOW_SECONDS): one with "
                "neither bound would grow without limit"
            )
        return self


class DriftWindow:
    """Thread-safe sliding window of class indices, bounded by count and/or age.

    A deque of (time, class) plus per-class counts, so adding is O(1) amortised and
    ``counts()`` is O(classes) rather than a pass over the window.
    """

    def __init__(
        self,
        n_classes: int,
        size: int | None = None,
        seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if n_classes < 1:
            raise ValueError("n_classes must be ≥ 1")
        if size is None and seconds is None:
            raise ValueError("a drift window needs a size, a time span or both")
        if size is not None and size < 1:
            raise ValueError("size must be ≥ 1")
        if seconds is not None and seconds <= 0:
            raise ValueError("seconds must be > 0")
        self.n_classes, self.size, self.seconds = n_classes, size, seconds
        self._clock = clock
        self._items: deque[tuple[float, int]] = deque()
        self._counts = [0] * n_classes
        self._lock = threading.Lock()

    def _pop(self) -> None:
        _, k = self._items.popleft()
        self._counts[k] -= 1

    def _expire(self, now: float) -> None:
        """Drop entries older than ``seconds`` (caller holds the lock)."""
        if self.seconds is None:
            return
        horizon = now - self.seconds
        while self._items and self._items[0][0] < horizon:
            self._pop()

    def add(self, k: int) -> None:
        self.extend((k,))

    def extend(self, ks: Iterable[int]) -> None:
        """Add predictions made now (one clock reading for the lot)."""
        items = [int(k) for k in ks]
        for k in items:
            if not 0 <= k < self.n_classes:
                raise ValueError(f"class index {k} outside 0..{self.n_classes - 1}")
        if not items:
            return
        with self._lock:
            now = self._clock()
            for k in items:
                self._items.append((now, k))
                self._counts[k] += 1
            if self.size is not None:
                while len(self._items) > self.size:
                    self._pop()
            self._expire(now)

    def counts(self) -> np.ndarray:
        """Predictions per class currently in the window."""
        with self._lock:
            self._expire(self._clock())
            return np.array(self._counts, dtype=np.int64)

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._items)


#: (model, version) pairs already warned about, so a reload does not repeat the warning.
_warned_missing: set[tuple[str, str]] = set()
#: Which monitor feeds each (model, version, modality) series now: the latest one made.
_owners: dict[tuple[str, str, str], DriftMonitor] = {}
_DRIFT_GAUGES = (
    metrics.DRIFT_PSI,
    metrics.DRIFT_JS,
    metrics.DRIFT_WINDOW_SAMPLES,
    metrics.DRIFT_REFERENCE_MISSING,
)


class DriftMonitor:
    """Drift of one model's predictions, exported as gauges computed at scrape time.

    Gauges are evaluated when Prometheus scrapes (``set_function``), so a time window
    keeps expiring while no predictions arrive. A second monitor for the same labels
    (a reloaded service) takes the series over.
    """

    def __init__(
        self,
        name: str,
        version: str,
        modality: str,
        classes: Sequence[str],
        reference: Mapping[str, float] | None,
        config: DriftConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cfg = config or DriftConfig()
        self.name, self.version, self.modality = name, version, modality
        self.classes = list(classes)
        self.window = DriftWindow(len(self.classes), cfg.size, cfg.seconds, clock)
        self.reference = self._reference_vector(reference)
        labels = self._labels = (name, version, modality)
        _owners[labels] = self
        metrics.set_function(metrics.DRIFT_WINDOW_SAMPLES, lambda: float(len(self.window)), *labels)
        if self.reference is None:
            metrics.DRIFT_REFERENCE_MISSING.labels(*labels).set(1)
            for gauge in (metrics.DRIFT_PSI, metrics.DRIFT_JS):  # a reload of a card that lost it
                metrics.remove(gauge, *labels)
            if (name, version) not in _warned_missing:
                _warned_missing.add((name, version))
                log.warning(
                    "class drift is not measured for %s/%s: its model card has no "
                    "reference_distribution (the validation set was not available when "
                    "the card was written), so there is nothing to compare predictions with",
                    name,
                    version,
                )
        else:
            metrics.DRIFT_REFERENCE_MISSING.labels(*labels).set(0)
            metrics.set_function(metrics.DRIFT_PSI, self.psi, *labels)
            metrics.set_function(metrics.DRIFT_JS, self.js, *labels)

    def retire(self) -> None:
        """Remove this version's drift series (it no longer serves here), unless a newer
        monitor for the same version has taken them over."""
        if _owners.get(self._labels) is not self:
            return
        del _owners[self._labels]
        for gauge in _DRIFT_GAUGES:
            metrics.remove(gauge, *self._labels)

    def _reference_vector(self, reference: Mapping[str, float] | None) -> np.ndarray | None:
        """The reference in the card's class order, whatever order its keys are in."""
        if reference is None:
            return None
        if set(reference) != set(self.classes) or len(reference) != len(self.classes):
            raise ValueError(
                f"reference_distribution of {self.name}/{self.version} must name exactly "
                f"its classes {self.classes}, got {sorted(reference)}"
            )
        return _as_distribution([reference[c] for c in self.classes], "reference_distribution")

    def observe(self, class_indices: Iterable[int]) -> None:
        """Top-1 class indices (card order) of predictions just made."""
        self.window.extend(class_indices)

    def samples(self) -> int:
        return len(self.window)

    def _window(self) -> np.ndarray | None:
        counts = self.window.counts()
        return counts / counts.sum() if counts.sum() else None

    def psi(self) -> float:
        """PSI of the window vs the reference; NaN with no reference or an empty window."""
        p = self._window()
        if p is None or self.reference is None:
            return math.nan
        return psi(p, self.reference)

    def js(self) -> float:
        """Jensen-Shannon distance (base 2); NaN with no reference or an empty window."""
        p = self._window()
        if p is None or self.reference is None:
            return math.nan
        return js_distance(p, self.reference)
