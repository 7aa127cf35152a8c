"""Background tasks that come back when they die: restarted with backoff, counted, shown.

A long-lived loop (the ingest node's results reader, a worker loop, the session reaper)
that raises would otherwise end silently: its task holds the exception, nobody awaits it,
and the process looks healthy while results stop. ``supervise`` runs the loop in a task
that logs the traceback, counts ``emostream_task_restarts_total{task}``, waits (0.1 s
doubling up to ``max_backoff_s``; reset after a run that lasted ``stable_after_s``) and
starts it again. A loop that returns has finished its work (a worker draining): it is not
restarted. ``/readyz`` reads ``Supervised.problem``: a task that is down, or that restarted
``crash_loop`` times within ``window_s``, makes the process not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from emostream import metrics

log = logging.getLogger("emostream.supervise")


class Supervised:
    """The handle of one supervised loop: its task and what became of it so far."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        max_backoff_s: float = 5.0,
        stable_after_s: float = 30.0,
        crash_loop: int = 3,
        window_s: float = 60.0,
    ) -> None:
        self.name = name
        self.restarts = 0
        self.last_error: str | None = None
        self.running = False
        self.finished = False
        self._factory = factory
        self._max_backoff_s = max_backoff_s
        self._stable_after_s = stable_after_s
        self._crash_loop = crash_loop
        self._window_s = window_s
        self._recent: deque[float] = deque(maxlen=crash_loop)
        metrics.TASK_RESTARTS.labels(name)
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=name
        )

    async def _run(self) -> None:
        delay = 0.0
        while True:
            started = time.monotonic()
            self.running = True
            try:
                await self._factory()
            except Exception as exc:
                self.running = False
                now = time.monotonic()
                self.restarts += 1
                self._recent.append(now)
                self.last_error = f"{type(exc).__name__}: {exc}"
                metrics.TASK_RESTARTS.labels(self.name).inc()
                log.exception("task %s died (restart %d); restarting", self.name, self.restarts)
                if now - started >= self._stable_after_s:
                    delay = 0.0
                delay = min(self._max_backoff_s, max(0.1, delay * 2))
                await asyncio.sleep(delay)
                continue
            finally:
                self.running = False
            self.finished = True
            return

    @property
    def crash_looping(self) -> bool:
        recent = self._recent
        if len(recent) < self._crash_loop:
            return False
        return time.monotonic() - recent[0] <= self._window_s

    @property
    def problem(self) -> str | None:
        """Why this task makes its process not ready, or None."""
        if self.task.done() and not self.finished and not self.task.cancelled():
            return f"task {self.name} ended: {self.task.exception()!r}"  # not expected
        if not self.running and not self.finished and not self.task.done():
            return f"task {self.name} is down (restart {self.restarts}): {self.last_error}"
        if self.crash_looping:
            return (
                f"task {self.name} is crash-looping ({len(self._recent)} restarts "
                f"in {self._window_s:.0f} s): {self.last_error}"
            )
        return None

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }

    async def stop(self) -> None:
        """Cancel it and wait until it has ended."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def supervise(
    name: str, factory: Callable[[], Awaitable[None]], *, max_backoff_s: float = 5.0
) -> Supervised:
    """Run ``factory()`` in a task of this loop, restarting it whenever it raises."""
    return Supervised(name, factory, max_backoff_s=max_backoff_s)


def readiness(tasks: Iterable[Supervised]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """The first problem among ``tasks`` (None when all are well) and each one's status."""
    tasks = list(tasks)
    problem = next((p for p in (t.problem for t in tasks) if p is not None), None)
    return problem, {t.name: t.status() for t in tasks}
