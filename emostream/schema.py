"""The public message schema (docs/ARCHITECTURE.md, "Messages").

One JSON object per message with a ``schema`` version. The same models serve the data
channel, SSE, ``/v1/predict`` and ``emostream analyze --format jsonl``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1


class BaseMessage(BaseModel):
    """What every message shares: its ``schema`` version and its JSON form."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: int = Field(default=SCHEMA_VERSION, alias="schema")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def to_dict(self) -> dict[str, object]:
        """The message as its JSON decodes (lists, not tuples): what a client receives."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def label_text(label: str, confidence: float, unsure: bool | None) -> str:
    """A result as a person reads it: ``happy 0.64``, or ``unsure (happy? 0.41)``."""
    return f"unsure ({label}? {confidence:.2f})" if unsure else f"{label} {confidence:.2f}"


class Face(BaseModel):
    """One face: box in source-frame pixels ``[x, y, w, h]`` and per-class probabilities.

    ``unsure``: the top probability is under ``results.unsure_below``, so ``label`` is a
    guess (absent from a server before it, read as False)."""

    track_id: int | None = None
    box: tuple[int, int, int, int]
    scores: dict[str, float]
    label: str
    confidence: float
    unsure: bool = False

    def text(self) -> str:
        return label_text(self.label, self.confidence, self.unsure)


class FaceMessage(BaseMessage):
    type: Literal["face"] = "face"
    session: str | None = None
    source: str | None = None  # file name, for offline analysis and /v1/predict
    seq: int
    pts: float | None = None  # media time of the frame, seconds
    latency_ms: float
    model: str | None = None  # "name/version" that produced the scores
    width: int | None = None  # source frame size, so clients can scale boxes
    height: int | None = None
    faces: list[Face]


class VoiceMessage(BaseMessage):
    """One audio window: ``speech`` False (silence, not classified) carries no scores;
    ``unsure`` as for a face (absent for silence)."""

    type: Literal["voice"] = "voice"
    session: str | None = None
    source: str | None = None
    track: str | None = None  # which audio track of the session (its name: a mid, a channel)
    role: str | None = None  # the speaker's role on that track: customer, agent or unknown
    start: float
    end: float
    speech: bool
    scores: dict[str, float] = Field(default_factory=dict)
    label: str | None = None
    confidence: float | None = None
    unsure: bool | None = None
    latency_ms: float
    model: str | None = None

    def text(self) -> str:
        if not self.speech or self.label is None or self.confidence is None:
            return "no speech"
        return label_text(self.label, self.confidence, self.unsure)


class ErrorMessage(BaseMessage):
    """On the data channel and SSE: the session lives on, but something is wrong.

    ``code`` ``broker_unavailable``: the server cannot reach its job broker (Redis); frames
    are dropped until it is back, then face messages simply resume. ``no_worker``: no
    inference worker is alive (none has sent a heartbeat lately); once per outage.
    """

    type: Literal["error"] = "error"
    session: str | None = None
    code: str
    detail: str


#: Any message a session sends (data channel or SSE), told apart by ``type``.
Message = Annotated[FaceMessage | VoiceMessage | ErrorMessage, Field(discriminator="type")]
_MESSAGE: TypeAdapter[FaceMessage | VoiceMessage | ErrorMessage] = TypeAdapter(Message)


def parse_message(text: str | bytes) -> FaceMessage | VoiceMessage | ErrorMessage:
    """One JSON message as its typed model (raises ``pydantic.ValidationError``)."""
    return _MESSAGE.validate_json(text)


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a stable machine code and a sentence for a person."""

    error: str
    detail: str
