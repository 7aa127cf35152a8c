"""One ``/metrics`` for a server of several processes (``serve --processes N``).

prometheus_client's multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` names a directory
before prometheus_client is imported, each process writes its values to its own memory
mapped files there, and a reader merges all the files into one exposition (counters and
histograms summed, each gauge by its ``multiprocess_mode``; see ``emostream.metrics``). So
any process, the parent included, can answer a scrape for the whole server, and the
directory lives in RAM (``/dev/shm``): the files are written on every increment.

The parent's part: make the directory (``multiprocess_dir``), start each child with
``child_env``, call ``process_died`` when a child exits (its live gauges leave the sums,
its counters stay in them), and let the directory go with the run.

Lost in multiprocess mode (prometheus_client does not merge them): the ``process_*`` and
``python_*`` collectors (memory, CPU, file descriptors, GC: one process's figures would
change with whichever process answered the scrape, so none are exported; read them per pid
from /proc), and the ``_created`` samples of counters and histograms.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from emostream.metrics_sampled import ENV, REMOVED, refresh

#: RAM-backed where the system has it: every counter increment writes to these files.
_SHM = Path("/dev/shm")


def new_dir() -> Path:
    """A private directory (0700) for one run's metric files; the caller removes it
    (``serve --processes`` makes it before it ``exec``s the supervisor, which removes it)."""
    base = _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK) else None
    return Path(tempfile.mkdtemp(prefix="emostream-metrics-", dir=base))


def remove_dir() -> None:
    """Remove this run's directory (the one in the environment), if any."""
    path = _env_path()
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[Path]:
    """A private directory (0700) for one run's metric files, removed when the run ends."""
    path = new_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def child_env(path: Path) -> dict[str, str]:
    """What a child's environment needs (before it imports prometheus_client, so in the
    environment it starts with) to write its metrics into ``path``."""
    return {ENV: str(path)}


def process_died(pid: int, path: Path | None = None) -> None:
    """Forget the live gauges of the exited child ``pid`` (its counters stay summed)."""
    where = path or _env_path()
    if where is None:
        raise ValueError(f"process_died({pid}): no multiprocess directory given or in {ENV}")
    mark_process_dead(pid, str(where))  # type: ignore[no-untyped-call]


def registry(path: Path | None = None) -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, or, in multiprocess mode (or given
    the run's ``path``, as the parent is), the merge of every process's files."""
    path = path or _env_path()
    if path is None:
        return REGISTRY
    merged = CollectorRegistry()
    merged.register(_Files(path))
    return merged


def exposition(path: Path | None = None) -> bytes:
    """The Prometheus text page of ``registry(path)``."""
    return generate_latest(registry(path))


def serve(port: int, host: str, path: Path | None = None) -> tuple[WSGIServer, Thread]:
    """Prometheus' own HTTP server for ``registry(path)`` on ``host:port`` (a thread)."""
    return start_http_server(port, addr=host, registry=registry(path))


def _env_path() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


class _Files(Collector):
    """Every process's files merged, without the series that were removed."""

    def __init__(self, path: Path) -> None:
        self._files = MultiProcessCollector(None, str(path))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        refresh()  # this process's own function-valued gauges, as of now
        for family in self._files.collect():  # type: ignore[no-untyped-call]
            if family.type == "gauge":
                family.samples = [s for s in family.samples if s.value != REMOVED]
            yield family
