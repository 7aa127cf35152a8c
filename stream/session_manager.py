"""All sessions of this ingest node: admission (``max_sessions``), lookup, the idle reaper,
and the calls that ended: their summaries, kept ``calls.keep_s`` and sent to the webhook.

Transports open sessions here and the HTTP routes find them here by id, whatever fed them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from emostream import metrics
from emostream.broker.base import IngestBroker
from emostream.modalities import Service
from emostream.pipeline.results_config import ResultsConfig
from emostream.stream.call_summary import CallSummary
from emostream.stream.calls_config import CallsConfig
from emostream.stream.frames import converter
from emostream.stream.server_config import SessionConfig
from emostream.stream.session import Session
from emostream.stream.webhook import deliver
from emostream.supervise import Supervised, supervise

log = logging.getLogger(__name__)

ACTIVE = metrics.ACTIVE_SESSIONS


class SessionLimitError(RuntimeError):
    pass


class SessionExistsError(ValueError):
    """A transport asked for a session id (a platform's) that is open already."""


@dataclass(frozen=True)
class EndedCall:
    """What is kept of a session after it ends: who may read it, and its summary."""

    id: str
    owner: bytes | None
    secret: str
    summary: CallSummary
    expires: float

    def record(self) -> bytes:
        """As kept in the broker (Redis), for the other ingest nodes."""
        owner = None if self.owner is None else self.owner.hex()
        return json.dumps(
            {"owner": owner, "secret": self.secret, "summary": self.summary.to_dict()}
        ).encode()

    @classmethod
    def from_record(cls, session: str, data: bytes) -> EndedCall | None:
        try:
            raw = json.loads(data)
            owner = None if raw["owner"] is None else bytes.fromhex(raw["owner"])
            summary = CallSummary.model_validate(raw["summary"])
            return cls(session, owner, str(raw["secret"]), summary, math.inf)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("kept summary of %s unreadable (%r)", session, exc)
            return None


class SessionManager:
    def __init__(
        self,
        broker: IngestBroker,
        config: SessionConfig,
        services: Mapping[str, Service] | None = None,
        calls: CallsConfig | None = None,
        results: ResultsConfig | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        self.calls = calls or CallsConfig()
        self.results = results or ResultsConfig()
        self.ended: dict[str, EndedCall] = {}
        self._deliveries: set[asyncio.Task[bool]] = set()
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

    async def open(
        self,
        owner: bytes | None = None,
        transport: str = "local",
        session_id: str | None = None,
    ) -> Session:
        """A new, started session (``SessionLimitError`` beyond ``max_sessions``;
        ``SessionExistsError`` for a ``session_id`` that is open already)."""
        if len(self.sessions) >= self.max_sessions:
            raise SessionLimitError(
                f"{len(self.sessions)} sessions open; this server allows {self.max_sessions}"
            )
        quota = self.config.max_sessions_per_owner
        if owner is not None and quota:
            held = sum(1 for s in self.sessions.values() if s.owner == owner)
            if held >= quota:
                raise SessionLimitError(
                    f"this credential holds {held} sessions; each may hold {quota} "
                    "(session.max_sessions_per_owner)"
                )
        if session_id is not None and session_id in self.sessions:
            raise SessionExistsError(f"session {session_id!r} is open already")
        session = Session(
            self.broker,
            self.config,
            self._frames,
            self.services,
            owner,
            transport,
            session_id=session_id,
            calls=self.calls,
            results=self.results,
        )
        self.sessions[session.id] = session
        self.ended.pop(session.id, None)
        metrics.SESSIONS_OPENED.labels(transport).inc()
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
        await self._keep(session)
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

    async def _keep(self, session: Session) -> None:
        """Keep the ended call's summary, count it, and send it to the webhook (in its own
        task)."""
        call = session.call.summary()
        metrics.CALLS_ENDED.labels(session.transport).inc()
        for role, figures in call.roles.items():
            if figures.classes is None or figures.mean_scores is None:
                continue
            for label in figures.mean_scores:
                share = figures.classes.get(label, 0.0)
                metrics.CALL_CLASS_SHARE.labels(role, label).observe(share)
        if self.calls.keep_s > 0:
            expires = time.monotonic() + self.calls.keep_s
            ended = EndedCall(session.id, session.owner, session.secret, call, expires)
            self.ended[session.id] = ended
            await self.broker.keep_record(session.id, ended.record(), self.calls.keep_s)
        if self.calls.webhook_url:
            body = call.to_json().encode()
            task = asyncio.get_running_loop().create_task(
                deliver(body, self.calls, session.id), name=f"{session.id}-webhook"
            )
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    def summary(self, session_id: str) -> CallSummary | None:
        """A live call's summary so far, or an ended one's kept on this node."""
        live = self.sessions.get(session_id)
        if live is not None:
            return live.call.summary()
        ended = self.ended.get(session_id)
        return None if ended is None else ended.summary

    async def ended_call(self, session_id: str) -> EndedCall | None:
        """An ended call kept here or, with Redis, by any ingest node."""
        found = self.ended.get(session_id)
        if found is not None:
            return found
        data = await self.broker.recall_record(session_id)
        return None if data is None else EndedCall.from_record(session_id, data)

    def _forget_ended(self, now: float) -> None:
        for sid in [sid for sid, e in self.ended.items() if e.expires <= now]:
            del self.ended[sid]

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.idle_timeout_s / 4))
            now = time.monotonic()
            self._forget_ended(now)
            for sid, s in list(self.sessions.items()):
                idle = now - s.last_activity > self.config.idle_timeout_s
                if s.closed.is_set() or idle:
                    await self.end(sid)

    async def close(self) -> None:
        if self._reaper is not None:
            await self._reaper.stop()
        for sid in list(self.sessions):
            await self.end(sid)
        if self._deliveries:  # a summary on its way gets a moment; then the process goes
            await asyncio.wait(self._deliveries, timeout=self.calls.webhook_timeout_s)
            for task in self._deliveries:
                task.cancel()
        self._frames.shutdown(wait=False, cancel_futures=True)  # a conversion is < 1 ms
