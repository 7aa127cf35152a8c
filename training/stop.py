"""Stopping a fit on purpose: SIGTERM and Ctrl-C end it as a stop, not as a crash.

SIGTERM (what ``kill``, ``timeout``, systemd and Kubernetes send) would end the process on the
spot and leave its MLflow run RUNNING for ever. While a fit runs it raises :class:`Stopped`
instead, once (a second SIGTERM waits for the first to be handled), so the run's context
marks it KILLED and the CLI exits with the signal's status and how to resume it. ``kill -9``
cannot be caught: :meth:`Tracking.reap_stale` marks such runs later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: the shell's exit status of a process ended by SIGTERM / SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM
EXIT_SIGINT = 128 + signal.SIGINT


class Stopped(KeyboardInterrupt):
    """A fit stopped on purpose; ``code`` is the exit status for the signal that stopped it.

    A KeyboardInterrupt: not swallowed by ``except Exception`` on the way up (a retry in a
    client library), and whatever handles Ctrl-C handles it the same way (Optuna fails the
    trial, the MLflow run context marks the run KILLED)."""

    def __init__(self, message: str, code: int = EXIT_SIGTERM) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Stopped` in the main thread (signal handlers can
    only be installed there: elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Stopped("stopped by SIGTERM", 128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
