"""Latency percentiles of a session's recent results (Prometheus has no per-session labels)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Results a session keeps per modality for its own percentiles (10 min at 15 fps, ~0.3 MB).
LATENCY_WINDOW = 9000


def percentiles(seconds: Iterable[float]) -> dict[str, float] | None:
    """Count, p50/p95/p99 and max in milliseconds; None when there is nothing yet."""
    values = list(seconds)
    if not values:
        return None
    ms = np.array(values) * 1e3
    return {
        "results": len(ms),
        **{f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
        "max": round(float(ms.max()), 1),
    }
