"""Batches made on a second thread while the network trains on the last one.

Voice batches are cut, augmented and turned into log-mel by numpy, which releases the GIL
in its FFTs and filters, so the next batch is made while torch runs this one. One producer
thread draws from the iterator in order, so every random draw happens in the same order as
without it (seeded runs repeat exactly); an error in the producer is raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` in order, up to ``depth`` made ahead on a daemon thread."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
            return
        q.put(_END)

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield got  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(0.05)
