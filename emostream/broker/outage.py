"""An outage that sessions must hear about: once each, whenever they opened.

A broker that finds it cannot serve (no inference worker alive, say) must tell every
open session, and every session opened while the outage lasts, exactly once; the next
outage tells them again. Each broker decides for itself what an outage is (Redis: no
worker heartbeat in Redis; a local multi-process broker: no inference process alive) and
calls ``begin``/``end``; this class only keeps the telling right. What a session hears is
a ``BrokerNotice`` on its result stream, which it sends as an error message.
"""

from __future__ import annotations

import logging

from emostream.broker.session_queues import SessionQueues
from emostream.pipeline.outcomes import BrokerNotice

log = logging.getLogger("emostream.broker")

NO_WORKER = "no_worker"  # the code sessions hear when no inference worker is alive


class Outage:
    def __init__(self, queues: SessionQueues) -> None:
        self._queues = queues
        self._current: BrokerNotice | None = None

    @property
    def current(self) -> BrokerNotice | None:
        """The notice of the outage under way, or None."""
        return self._current

    def begin(self, code: str, detail: str) -> None:
        """Tell every open session, unless this outage has begun already."""
        if self._current is not None:
            return
        self._current = BrokerNotice(detail, code)
        log.warning("%s: %s", code, detail)
        self._queues.tell_all(self._current)

    def end(self) -> None:
        """Over: the next ``begin`` tells every session again."""
        if self._current is not None:
            log.warning("%s: over", self._current.code)
            self._current = None

    def on_open(self, session: str) -> None:
        """A session just opened (its queue open already): told at once during an outage."""
        if self._current is not None:
            self._queues.put(session, self._current)
