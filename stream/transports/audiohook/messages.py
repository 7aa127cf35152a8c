"""The AudioHook protocol's text messages (version 2), as Genesys Cloud sends and expects
them: pydantic models of what a client may send, builders of what the server sends.

Every message is a JSON object with ``version`` ("2"), ``id`` (the session id),
``type``, ``seq`` (1, 2, 3, ... per direction) and ``parameters``; a client message also
carries ``serverseq`` (the last server ``seq`` it saw) and ``position`` (an ISO 8601
duration, ``PT1.25S``: how much audio it has streamed); a server message ``clientseq``
(the last client ``seq`` it processed).

Client: ``open``, ``close``, ``ping``, ``update``, ``paused``, ``resumed``, ``discarded``,
``error``. Server: ``opened``, ``closed``, ``pong``, ``updated``, ``disconnect``,
``pause``, ``resume``, ``reconnect``, ``event``. Unknown fields are ignored (the protocol
grows by adding them); a missing or mistyped known field is a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from emostream import safejson

NULL_UUID = "00000000-0000-0000-0000-000000000000"  # the connection probe's conversation
VERSION = "2"
_DURATION = re.compile(r"PT(\d+(?:\.\d*)?|\.\d+)S")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class ProtocolError(Exception):
    """A message (or connection) refused: ``reason`` labels the metric, ``info`` is the
    ``disconnect`` message's text."""

    def __init__(self, reason: str, info: str) -> None:
        super().__init__(info)
        self.reason = reason
        self.info = info


def seconds(duration: str) -> float:
    """``PT1.5S`` -> 1.5 (``ValueError`` for anything else)."""
    m = _DURATION.fullmatch(duration) if isinstance(duration, str) else None
    if m is None:
        raise ValueError(f"{str(duration)[:40]!r} is not a duration like PT1.5S")
    return float(m[1])


def duration(value: float) -> str:
    """1.5 -> ``PT1.5S`` (milliseconds at most, never an exponent)."""
    text = f"{max(0.0, value):.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def is_uuid(value: str) -> bool:
    return bool(_UUID.fullmatch(value))


def _duration_field(v: object) -> object:
    return seconds(v) if isinstance(v, str) else v


#: No call, gap or position lasts longer: a duration past it (1e20 s, or digits enough to
#: read as infinite) would move the stream's position past what a frame's pts holds
MAX_DURATION_S = 366 * 86400.0
#: an ISO 8601 duration, read as seconds
Duration = Annotated[
    float, BeforeValidator(_duration_field), Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)
]
Seq = Annotated[int, Field(ge=0, strict=True)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Participant(_Lenient):
    id: str = ""
    ani: str = ""
    aniName: str = ""  # the protocol's names, camelCase
    dnis: str = ""


class Media(_Lenient):
    """One media format as offered: checked against what we take in ``server.py``, so an
    offer we cannot take is not a malformed message."""

    type: str
    format: str
    channels: list[str]
    rate: int

    def wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "format": self.format,
            "channels": self.channels,
            "rate": self.rate,
        }


class OpenParameters(_Lenient):
    organizationId: str
    conversationId: str
    participant: Participant = Field(default_factory=Participant)
    media: list[Media]
    language: str | None = None
    supportedLanguages: bool = False
    customConfig: dict[str, Any] | None = None


class CloseParameters(_Lenient):
    reason: Literal["end", "error", "disconnect", "reconnect"]


class PingParameters(_Lenient):
    rtt: Duration | None = None


class UpdateParameters(_Lenient):
    language: str | None = None


class GapParameters(_Lenient):
    """``discarded`` and ``resumed``: audio from ``start`` lasting ``discarded`` s was
    never sent."""

    start: Duration
    discarded: Duration


class ErrorParameters(_Lenient):
    code: int
    message: str
    retryAfter: Duration | None = None


class Empty(_Lenient):
    pass


PARAMETERS: dict[str, type[BaseModel]] = {
    "open": OpenParameters,
    "close": CloseParameters,
    "ping": PingParameters,
    "update": UpdateParameters,
    "paused": Empty,
    "resumed": GapParameters,
    "discarded": GapParameters,
    "error": ErrorParameters,
}


class ClientMessage(_Lenient):
    version: Literal["2"]
    id: str
    type: str
    seq: Annotated[int, Field(ge=1, strict=True)]
    serverseq: Seq
    position: Duration
    parameters: dict[str, Any]


class Parsed(BaseModel):
    """A client message whose parameters match its type."""

    message: ClientMessage
    parameters: BaseModel

    @property
    def type(self) -> str:
        return self.message.type


def parse(text: str) -> Parsed:
    """A client message from its text; ``ProtocolError`` when it is not JSON, not a client
    message, of an unknown type, or its parameters do not fit its type."""
    try:
        data = safejson.loads(text)
    except ValueError:
        raise ProtocolError("bad_json", "the text message is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "the text message is not a JSON object")
    try:
        message = ClientMessage.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(
            "bad_message", f"not an AudioHook v2 client message: {_why(exc)}"
        ) from None
    model = PARAMETERS.get(message.type)
    if model is None:
        raise ProtocolError(
            "unknown_type", f"{message.type[:40]!r} is not a message a client sends"
        )
    try:
        parameters = model.model_validate(message.parameters)
    except ValidationError as exc:
        raise ProtocolError(
            "bad_parameters", f"the parameters of {message.type!r} are invalid: {_why(exc)}"
        ) from None
    return Parsed(message=message, parameters=parameters)


def _why(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"{where}: {first['msg']}"


ServerType = Literal[
    "opened", "closed", "pong", "updated", "disconnect", "pause", "resume", "reconnect", "event"
]


def server_message(
    session: str, seq: int, clientseq: int, type_: ServerType, parameters: dict[str, Any]
) -> str:
    """A server message's text."""
    return json.dumps(
        {
            "version": VERSION,
            "id": session,
            "type": type_,
            "seq": seq,
            "clientseq": clientseq,
            "parameters": parameters,
        },
        separators=(",", ":"),
    )
