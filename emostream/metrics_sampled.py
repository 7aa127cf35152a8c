"""Gauges whose value a function gives, and series taken away, in one process or many.

In one process prometheus_client calls a gauge's function when ``/metrics`` is read
(``Gauge.set_function``) and ``remove`` deletes a series. In multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, see ``metrics_processes``) the process that answers a scrape
reads every process's values from their files: it cannot call another process's function,
and a value once written to a file cannot be deleted. So there each process writes its
functions' values into its own file every ``SAMPLE_EVERY_S`` seconds (one daemon thread)
and once more before it answers a scrape itself; and a removed series is set to
``REMOVED``, which the exposition leaves out. Every gauge that has series removed is a
``max`` gauge, so a process that still has the series (any value above ``REMOVED``) keeps
it exported.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from prometheus_client import Gauge

log = logging.getLogger("emostream.metrics")

#: prometheus_client's switch: set (before it is imported) to the directory of the run's files.
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How stale another process's function-valued gauge may be in the whole server's
#: exposition: drift and task counts move over minutes, and Prometheus scrapes every 15 s.
SAMPLE_EVERY_S = 1.0
#: The value that marks a removed series in a multiprocess file (no real gauge reaches it).
REMOVED = float("-inf")

_Key = tuple[int, tuple[str, ...]]
_functions: dict[_Key, tuple[Gauge, Callable[[], float]]] = {}
_failed: set[_Key] = set()
_lock = threading.Lock()
_sampler: threading.Thread | None = None


def multiprocess() -> bool:
    """Whether this process's metrics live in a multiprocess directory's files."""
    return bool(os.environ.get(ENV))


def set_function(gauge: Gauge, f: Callable[[], float], *labels: str) -> None:
    """Let ``f`` give the value of ``gauge`` (its series ``labels``) whenever it is read."""
    child = gauge.labels(*labels) if labels else gauge
    if not multiprocess():
        child.set_function(f)
        return
    global _sampler
    with _lock:
        _functions[(id(gauge), labels)] = (child, f)
        _failed.discard((id(gauge), labels))
        _write(child, f, (id(gauge), labels))
        if _sampler is None:
            _sampler = threading.Thread(target=_sample_forever, name="metrics-sampler", daemon=True)
            _sampler.start()


def remove(gauge: Gauge, *labels: str) -> None:
    """Take the series ``labels`` of ``gauge`` away (nothing if it does not exist)."""
    with _lock:  # so that no sample written meanwhile brings the series back
        _functions.pop((id(gauge), labels), None)
        if multiprocess():
            gauge.labels(*labels).set(REMOVED)
        else:
            gauge.remove(*labels)


def refresh() -> None:
    """Write this process's function-valued gauges into its file now."""
    with _lock:
        for key, (child, f) in _functions.items():
            _write(child, f, key)


def _write(child: Gauge, f: Callable[[], float], key: _Key) -> None:
    """One function's value into the file; a failing function is logged once, not retried
    into the log every second (its series keeps the last value written)."""
    try:
        child.set(f())
    except Exception:
        if key not in _failed:
            _failed.add(key)
            log.warning("a sampled gauge's function raised; its value is stale", exc_info=True)


def _sample_forever() -> None:
    while True:
        time.sleep(SAMPLE_EVERY_S)
        refresh()
