"""Milliseconds per input of an ONNX graph at a few batch sizes, bounded in time.

A quantized version is worth shipping only if it is faster where it runs, so the stage that
makes one measures both graphs the same way on the machine that made it (the figures go into
its report). Each size runs for about ``budget_s`` seconds after a warm-up, whatever the
model's speed, so the whole measurement stays within a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from emostream.models.runner import OnnxRunner, RunnerConfig


def ms_per_input(
    onnx: bytes,
    sample: np.ndarray,
    batches: Sequence[int],
    threads: int = 1,
    budget_s: float = 0.3,
) -> dict[int, float]:
    """Mean wall time per input over repeated calls, per batch size.

    ``sample`` is one preprocessed input (1, ...); it is tiled to each batch size. One
    intra-op and one inter-op thread by default: what one core does."""
    runner = OnnxRunner(onnx, RunnerConfig(intra_op_threads=threads, inter_op_threads=1))
    out: dict[int, float] = {}
    for batch in batches:
        x = np.ascontiguousarray(np.repeat(sample[:1], batch, axis=0))
        for _ in range(3):
            runner.run(x)
        calls, start = 0, time.perf_counter()
        while True:
            runner.run(x)
            calls += 1
            spent = time.perf_counter() - start
            if spent >= budget_s and calls >= 5:
                break
        out[batch] = round(spent / (calls * batch) * 1000.0, 4)
    return out
