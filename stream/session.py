"""A session: tracks in, messages out, whatever transport feeds it.

A session owns its tracks (``MediaTrack``: a name, audio or video, a role, decoded frames)
and everything between them and the client: each track is read by the modality that
reads its kind (``emostream/modalities``: video frames become face jobs, audio windows
voice jobs or silent-window messages), jobs go to the broker, outcomes come back through
``IngestBroker.results(session)``, are kept in ``seq`` order (``stream/ordering.py``: a late
one is dropped) and become messages (``SessionView``), and messages go
to every output the transport added (a WebRTC data channel) and to every SSE subscriber.

A transport (``stream/transports/``: WebRTC, or the in-process one tests use) creates the
session through the ``SessionManager``, adds tracks and outputs, and registers what must
happen when the session ends (close its peer connection). A session ends on DELETE, when
its transport says so, or after ``idle_timeout_s`` without media; ending it cancels its
readers, drops its queued jobs and runs the transport's clean-up, so a vanished client
leaks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from emostream.broker.base import IngestBroker, UnknownSessionError
from emostream.modalities import MediaTrack, Service, registered
from emostream.modalities.base import Message
from emostream.pipeline.jobs import Job
from emostream.pipeline.results_config import ResultsConfig
from emostream.schema import ErrorMessage, VoiceMessage
from emostream.stream.call_summary import CallRecord
from emostream.stream.calls_config import CallsConfig
from emostream.stream.fanout import Fanout, Queue
from emostream.stream.ordering import InOrder
from emostream.stream.server_config import SessionConfig
from emostream.stream.session_view import SessionView

log = logging.getLogger(__name__)


Output = Callable[[str], None]
Closer = Callable[[], Awaitable[None]]


class Session:
    """One client's session: implements ``TrackSink`` for the modalities' track readers."""

    def __init__(
        self,
        broker: IngestBroker,
        config: SessionConfig,
        convert_pool: ThreadPoolExecutor,
        services: Mapping[str, Service] | None = None,
        owner: bytes | None = None,
        transport: str = "local",
        session_id: str | None = None,
        calls: CallsConfig | None = None,
        results: ResultsConfig | None = None,
    ) -> None:
        self.id = session_id or secrets.token_urlsafe(12)
        self.owner = owner  # who created it (stream.auth); None on an open server
        self.secret = secrets.token_urlsafe(24)  # its session_token: read, follow, end it
        self.transport = transport
        self.broker = broker
        self.config = config
        self._pool = convert_pool
        self._services = services or {}
        self.view = SessionView(
            self.id,
            smoothing=config.smoothing,
            unsure_below=(results or ResultsConfig()).unsure_below,
        )
        self.subscribers = Fanout(config.max_subscribers)
        self.started = self.last_activity = time.monotonic()
        self.frames_in = 0
        self.messages_out = 0
        self.closed = asyncio.Event()
        self.tracks: list[MediaTrack] = []
        self.notices: list[ErrorMessage] = []  # a late output gets them too (one per code)
        self.describe: Callable[[], dict[str, object]] = lambda: {}  # the transport's state
        self._outputs: list[Output] = []
        self._closers: list[Closer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._seqs: Counter[str] = Counter()
        self._in_order = InOrder()  # results leave in seq order (stream/ordering.py)
        self.calls = calls or CallsConfig()
        #: the call as a whole, per role (``GET /v1/sessions/{id}/summary``, the webhook)
        self.call = CallRecord(self.id, transport, frozenset(self.calls.analyse_roles))

    # -- what a transport does ------------------------------------------------------------
    async def start(self) -> None:
        """Open the session's result stream and start sending its results."""
        await self.broker.open_session(self.id)
        self.spawn(self._send_results(), f"{self.id}-results")

    def analyses(self, role: str) -> bool:
        """Whether a track of ``role`` is analysed (``calls.analyse_roles``): a transport
        need not even decode the audio of one that is not."""
        return self.calls.analysed(role)

    def add_track(self, track: MediaTrack) -> None:
        """Read ``track`` with every modality that reads its kind (none, or a role that is
        not analysed: just drain it, counting its seconds)."""
        self.tracks.append(track)
        if track.kind == "audio" and not self.analyses(track.role):
            self.spawn(self._unanalysed(track), f"{self.id}-unanalysed-{track.name}")
            return
        readers = [m for m in registered() if m.track_kind == track.kind]
        for modality in readers:
            self.spawn(modality.read(self, track), f"{self.id}-{modality.name}-{track.name}")
        if not readers:
            self.spawn(self._drain(track), f"{self.id}-{track.kind}-{track.name}")

    def add_output(self, output: Output) -> None:
        """Another place every message goes (a data channel), besides SSE."""
        self._outputs.append(output)

    def on_close(self, closer: Closer) -> None:
        """Run when the session ends, after its readers are cancelled."""
        self._closers.append(closer)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A task that lives as long as the session (cancelled when it ends)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- TrackSink: what the modalities' readers do ----------------------------------------
    @property
    def max_side(self) -> int:
        return self.config.max_side

    @property
    def convert_pool(self) -> ThreadPoolExecutor:
        return self._pool

    def service(self, modality: str) -> Service | None:
        return self._services.get(modality)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def next_seq(self, modality: str) -> int:
        self._seqs[modality] += 1
        return self._seqs[modality]

    def count_in(self) -> None:
        self.frames_in += 1

    async def submit(self, job: Job) -> None:
        with contextlib.suppress(UnknownSessionError):  # ended between check and submit
            await self.broker.submit(job)

    def send(self, message: Message | ErrorMessage) -> None:
        self._record(message)
        self._send(message.to_json())

    def unanalysed_audio(self, role: str, track: str, seconds: float) -> None:
        """Seconds of audio of a role that is not analysed (for the call's summary)."""
        self.touch()
        self.call.unanalysed_audio(role, track, seconds)

    def _record(self, message: Message | ErrorMessage) -> None:
        if isinstance(message, VoiceMessage):
            self.call.add(message)

    def notice(self, code: str, detail: str) -> None:
        if any(n.code == code for n in self.notices):
            return
        notice = ErrorMessage(session=self.id, code=code, detail=detail)
        self.notices.append(notice)
        self.send(notice)

    # -- results ------------------------------------------------------------------------
    async def _send_results(self) -> None:
        async for event in self.broker.results(self.id):
            msg = self.view.message(self._in_order.admit(event))
            if isinstance(msg, ErrorMessage):
                self._keep_notice(msg)
            if msg is not None:
                self._record(msg)
                self._send(msg.to_json())

    def _keep_notice(self, notice: ErrorMessage) -> None:
        """A broker notice (``no_worker`` at open, say) comes before a data channel opens:
        keep the latest of its code for outputs added later, as ``notice`` does."""
        self.notices = [n for n in self.notices if n.code != notice.code] + [notice]

    def _send(self, text: str) -> None:
        """To every output and every SSE subscriber."""
        for output in self._outputs:
            output(text)
        self.subscribers.publish(text)  # a slow reader loses the oldest, not the newest
        self.messages_out += 1

    def subscribe(self) -> Queue:
        """A queue of this session's messages for one SSE stream (``SubscriberLimitError``
        beyond ``max_subscribers``)."""
        return self.subscribers.subscribe()

    async def _drain(self, track: MediaTrack) -> None:
        async for _ in track.frames:
            self.touch()

    async def _unanalysed(self, track: MediaTrack) -> None:
        async for frame in track.frames:
            rate = getattr(frame, "sample_rate", 0) or 0
            samples = getattr(frame, "samples", 0) or 0
            self.unanalysed_audio(track.role, track.name, samples / rate if rate else 0.0)

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.call.ended = time.time()
        self.subscribers.close()  # first: the end marker must not wait on what may fail below
        await self.broker.close_session(self.id)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for closer in self._closers:
            try:
                await closer()
            except Exception as exc:  # one clean-up failing must not skip the others
                log.warning("session %s: closing its transport failed (%r)", self.id, exc)
