"""The threads REST and offline work (``/v1/predict``, ``/v1/analyze``) runs in, at a lower
CPU priority than live sessions (``limits.rest_nice``).

On Linux nice is per thread, so each of these threads lowers its own priority when it
starts: the scheduler then gives the cores to session and inference threads first, and
an upload burst takes what they leave. A pool of its own (``limits.predict_concurrency``
threads), not anyio's shared one, so no other work inherits the niceness, and the
detectors, built per thread (``ThreadLocalDetector``), are built that many times at most.
The work runs in these threads: the offline detectors' ONNX Runtime sessions run
single-threaded in the caller (``intra_op_threads`` 1), so the niceness reaches them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def lower_priority(nice: int) -> None:
    """This thread's niceness raised by ``nice`` (Linux: per thread; elsewhere a no-op)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:  # a sandbox may refuse; the work still runs
        log.warning("REST threads keep their priority: %s", exc)


class RestPool:
    """``threads`` worker threads at ``nice`` below the process's priority."""

    def __init__(self, threads: int, nice: int) -> None:
        self.nice = nice
        self._pool = ThreadPoolExecutor(
            threads, "emostream-rest", initializer=lower_priority, initargs=(nice,)
        )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a pool thread; the event loop goes on meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
