"""What a modality is: one spec that every generic part asks, instead of branching on a name.

A modality (faces, voice, ...) is the kind of media track it reads, the job info and scores
it passes along, how those travel on the Redis wire, the broker's real-time rules for its
jobs, the analyzer that scores them, the settings branch of its model, the messages a
session builds from its outcomes, and whether it supports shadowing. The broker, the wire,
the worker process, the session and its view, the model watcher and the app loop over the
registered specs (``emostream.modalities.registered``), so adding a modality is adding a
spec module (and its analyzer), not editing them.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

from emostream.broker.broker_config import BrokerConfig
from emostream.broker.codecs import Fields
from emostream.pipeline.analyzer import Analyzer
from emostream.pipeline.jobs import Job
from emostream.pipeline.outcomes import Scored, Scores
from emostream.schema import BaseMessage

if TYPE_CHECKING:
    from emostream.models.serving import ModelSlot
    from emostream.settings import Settings

TrackKind = Literal["audio", "video"]
Role = Literal["customer", "agent", "unknown"]
ROLES: tuple[Role, ...] = ("customer", "agent", "unknown")
Message = BaseMessage  # a modality's own message type (schema.py): face, voice, ...


class ServedModelConfig(Protocol):
    """The part of a modality's settings branch that says which model it serves."""

    @property
    def model(self) -> str: ...

    @property
    def alias(self) -> str: ...

    @property
    def watch_interval_s(self) -> float: ...


@dataclass
class Service:
    """What a process holds for one modality: its analyzer, or why it has none.

    A modality's own service may carry more (voice: its VAD and windows).
    """

    analyzer: Analyzer | None = None
    unavailable: str | None = None
    #: the slot serving it once the process runs it (a promotion swaps the slot's analyzer)
    slot: ModelSlot[Any] | None = None

    def status(self) -> dict[str, object]:
        if self.analyzer is None:
            return {"available": False, "reason": self.unavailable}
        return {"available": True, "model": self.analyzer.model}


@dataclass
class MediaTrack:
    """One track of a session, whatever transport feeds it: a name the client knows (an
    SDP ``mid``, a channel), its kind, the speaker's role, and its decoded frames
    (``av.VideoFrame`` or ``av.AudioFrame``) until the track ends."""

    name: str
    kind: TrackKind
    frames: AsyncIterator[Any]
    role: Role = "unknown"


class TrackSink(Protocol):
    """What a track reader may do with its session (``stream/session.py``)."""

    @property
    def id(self) -> str: ...

    @property
    def closed(self) -> asyncio.Event: ...

    @property
    def max_side(self) -> int: ...

    @property
    def convert_pool(self) -> ThreadPoolExecutor: ...

    def service(self, modality: str) -> Service | None: ...

    def touch(self) -> None:
        """Media arrived: the session is not idle."""

    def next_seq(self, modality: str) -> int:
        """The next ``seq`` of this modality's jobs in this session."""

    def count_in(self) -> None:
        """One more frame received (the session's ``frames_in``)."""

    async def submit(self, job: Job) -> None:
        """To the broker; a session that ended meanwhile drops it quietly."""

    def send(self, message: Message) -> None:
        """A message built without a model (a silent window) straight to the clients."""

    def notice(self, code: str, detail: str) -> None:
        """An ``error`` message, said once per code (``voice_unavailable``)."""


class ModalityView(ABC):
    """A session's side of one modality: outcome to message, and its own figures."""

    @abstractmethod
    def message(self, scored: Scored[Any], latency_s: float) -> Message: ...

    @abstractmethod
    def summary(self) -> dict[str, object]: ...


class ModalitySpec(ABC):
    """One modality, all in one place. Subclasses are found in this package and
    registered by ``name``."""

    name: ClassVar[str]
    #: the media track kind it reads
    track_kind: ClassVar[TrackKind]
    #: the model card's ``input.kind`` it can serve
    input_kind: ClassVar[str]
    #: the process cannot serve without it (``/readyz`` fails); otherwise it is reported
    #: unavailable and the rest serves
    required: ClassVar[bool] = False
    #: a candidate version can score beside production (``emostream models shadow``)
    shadows: ClassVar[bool] = False
    #: where its figures go in a session's summary (None: at the top level)
    summary_key: ClassVar[str | None] = None
    #: the job fields of its info on the wire (others' fields in its job are an error)
    info_fields: ClassVar[frozenset[bytes]]
    #: whether a newer queued job replaces the oldest one beyond ``in_flight``
    #: (frames do; voice windows each hold different speech, they are never superseded
    #: below the limit)
    supersedes: ClassVar[bool] = True

    # -- settings -------------------------------------------------------------------------
    @abstractmethod
    def model_config(self, settings: Settings) -> ServedModelConfig:
        """Its branch of the settings tree (``EMOSTREAM_<BRANCH>__*``)."""

    # -- broker rules ---------------------------------------------------------------------
    @abstractmethod
    def in_flight(self, config: BrokerConfig) -> int:
        """Queued jobs per session before the oldest is superseded."""

    @abstractmethod
    def deadline_s(self, config: BrokerConfig) -> float:
        """Seconds from a job's ``created`` to its deadline."""

    # -- the analyzer -------------------------------------------------------------------
    @abstractmethod
    def load(self, settings: Settings, *, ingest: bool) -> Service:
        """Load its analyzer (``ingest``: with what sessions need besides, such as a VAD);
        a missing model becomes ``unavailable`` with the command that makes it, for an
        optional modality; a required one raises."""

    def describe(self, analyzer: Analyzer) -> str:
        """A few words for the worker's start-up log line."""
        return self.name

    def ready(self, service: Service) -> dict[str, object]:
        """Its entries under ``models`` in ``/readyz``."""
        status = service.status()
        if service.slot is not None:
            status.update(service.slot.status())
        return {self.name: status}

    # -- the wire -------------------------------------------------------------------------
    @abstractmethod
    def encode_info(self, info: Any) -> Fields: ...

    @abstractmethod
    def decode_info(self, fields: Fields) -> Any: ...

    @abstractmethod
    def encode_payload(self, job: Job, config: BrokerConfig) -> Fields: ...

    @abstractmethod
    def decode_payload(self, fields: Fields, job: Job) -> np.ndarray: ...

    @abstractmethod
    def encode_scores(self, result: Scores) -> Fields: ...

    @abstractmethod
    def decode_scores(self, fields: Fields, classes: tuple[str, ...]) -> Scores: ...

    # -- sessions -------------------------------------------------------------------------
    @abstractmethod
    def view(self, session: str, smoothing: float, unsure_below: float) -> ModalityView:
        """A session's view: ``smoothing`` (``session.smoothing``) and ``unsure_below``
        (``results.unsure_below``) for the messages it builds."""

    @abstractmethod
    async def read(self, sink: TrackSink, track: MediaTrack) -> None:
        """Turn a track's frames into jobs (and messages that need no model) until it ends."""
