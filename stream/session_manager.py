"""All sessions of this ingest node: admission (``max_sessions``), lookup, the idle reaper.

Transports open sessions here and the HTTP routes find them here by id, whatever fed them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from emostream import metrics
from emostream.broker.base import IngestBroker
from emostream.modalities import Service
from emostream.stream.frames import converter
from emostream.stream.server_config import SessionConfig
from emostream.stream.session import Session
from emostream.supervise import Supervised, supervise

log = logging.getLogger(__name__)

ACTIVE = metrics.ACTIVE_SESSIONS


class SessionLimitError(RuntimeError):
    pass


class SessionManager:
    def __init__(
        self,
        broker: IngestBroker,
        config: SessionConfig,
        services: Mapping[str, Service] | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        self.services: Mapping[str, Service] = services or {}
        self.max_sessions = config.max_sessions
        self.sessions: dict[str, Session] = {}
        self._reaper: Supervised | None = None
        self._frames = converter(config.convert_threads)  # threads start on first use

    def start(self) -> None:
        """Start the idle reaper, supervised (restarted if ending a session ever raises)."""
        self._reaper = supervise("reaper", self._reap)

    @property
    def tasks(self) -> list[Supervised]:
        return [] if self._reaper is None else [self._reaper]

    async def open(self, owner: bytes | None = None, transport: str = "local") -> Session:
        """A new, started session (``SessionLimitError`` beyond ``max_sessions``)."""
        if len(self.sessions) >= self.max_sessions:
            raise SessionLimitError(
                f"{len(self.sessions)} sessions open; this server allows {self.max_sessions}"
            )
        session = Session(self.broker, self.config, self._frames, self.services, owner, transport)
        self.sessions[session.id] = session
        ACTIVE.set(len(self.sessions))
        try:
            await session.start()
        except BaseException:
            await self.end(session.id)
            raise
        return session

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def end(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        ACTIVE.set(len(self.sessions))
        if session is None:
            return False
        await session.close()
        summary = session.view.summary()
        log.info(
            "session %s (%s) ended after %.0f s: %d frames in, %d messages out, dropped %s, "
            "end-to-end latency %s, classes %s",
            session_id,
            session.transport,
            time.monotonic() - session.started,
            session.frames_in,
            session.messages_out,
            summary["dropped"],
            summary.get("latency_ms"),
            summary.get("classes"),
        )
        return True

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.idle_timeout_s / 4))
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                idle = now - s.last_activity > self.config.idle_timeout_s
                if s.closed.is_set() or idle:
                    await self.end(sid)

    async def close(self) -> None:
        if self._reaper is not None:
            await self._reaper.stop()
        for sid in list(self.sessions):
            await self.end(sid)
        self._frames.shutdown(wait=False, cancel_futures=True)  # a conversion is < 1 ms
