"""Fuzz the two call-centre WebSocket protocols on a real server, Genesys AudioHook
(``GET /v1/audiohook``) and Twilio Media Streams (``GET /v1/twilio``), and leave 1,000
sockets idle on each.

What is fuzzed: whole client conversations drawn by Hypothesis, each on a fresh socket:
all valid, valid but for one fault anywhere, or any mix. Their steps are (a) the
protocol's messages in a valid order (AudioHook: ``open`` of any format we read or the
connection probe, ``ping``, ``update``, ``paused``/``resumed``, ``discarded``, ``error``,
audio frames; Twilio: ``connected``, ``start``, ``media``, ``dtmf``, ``mark``), (b) the same
messages mutated (a field of the wrong type, missing, huge or negative; a ``seq`` that
skips or repeats; an unknown type; media offers, durations and custom parameters each
server checks; odd strings of ``tests/fuzz_inputs.py``) or out of their place, (c) junk:
text that is not JSON or JSON nested 1,000 deep, text that is not UTF-8, binary frames of
any size up to past the server's 1 MiB cap, pauses. A conversation ends (d) as clients
end: the close transaction (AudioHook ``close``, Twilio ``stop``), a WebSocket close, a
dropped TCP connection, or silence until the server speaks (its idle timeout). A few start
with a bad upgrade (AudioHook: an unknown key, no signature, a session id that is not a
UUID) or take the bystander's id (a session open already). What the fuzz found is tried
first by every run (``HOOK_FOUND``, ``TWILIO_FOUND``).

Invariants, for every conversation:

- the server answers normally or with the protocol's own refusal: AudioHook's
  ``disconnect`` (reason ``error``, an ``info``), then nothing but ``closed``, or an HTTP
  error before the upgrade; Twilio's close code of the README's table, with a reason; never
  1011; every AudioHook server message well formed (version, id, ``seq`` in order, an
  ``opened`` naming a format it reads), no Twilio server message at all;
- at most one refusal is counted per connection, under a documented reason and never
  ``internal``/``internal_error``; one where the server refused, and the close code is
  the reason's (the WebSocket layer's own 1007/1009 may come first: ``layer_codes``);
- a conversation of valid messages only is never refused: every ``ping``, ``update`` and
  ``open`` is answered and its close transaction completes, or its silence is counted as
  ``idle``, or its hang-up as the client gone;
- afterwards its session is gone, the server's task count is back where it was and the
  log (this process's: the servers run in threads) holds no error and no traceback;
- a bystander call, open before the fuzz and talking throughout, still answers at the end
  (AudioHook: a ``ping``; Twilio: its session is the same, still open).

The idle sockets: ``IDLE_SOCKETS`` per endpoint upgraded (AudioHook with
a valid key), at most ``CONNECTING`` upgrades at once, then silent. Each must be closed by
the server's idle timeout with the protocol's answer (AudioHook: ``disconnect``, then 1008
after another ``IDLE_S``; Twilio: 1008 and a reason) and counted under ``idle``; then no
session is left, the task count and open files are back where they were, and the
bystander is untouched. Twice: the second round must not grow memory (resident, after
giving freed memory back) by ``RSS_BOUND_MB``, nor keep an object per two sockets.

Marked ``slow`` (seconds each: ``make check`` leaves them out, ``make test`` runs them).
Bounded: ``AUDIOHOOK_EXAMPLES`` and ``TWILIO_EXAMPLES`` (``EMOSTREAM_FUZZ_SCALE``
multiplies them), a fixed seed and no example database, so every run tries the same
conversations; each is guarded by ``EXAMPLE_GUARD_S``. One server per protocol (memory
broker) with ``IDLE_S`` as its idle timeout and no drain after a call's end, so silence
costs a second. Every distinct fault is reported with its first example
(``fuzz_checks.Faults``); ``EMOSTREAM_FUZZ_SHRINK=1`` stops at the first and shrinks it.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import gc
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emostream import metrics
from emostream.bench.procs import free_port
from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.server import WS_MAX_BYTES
from emostream.stream.transports.audiohook.messages import NULL_UUID

from audiohook_client import (
    MONO,
    STEREO,
    Client,
    Running,
    open_parameters,
    upgrade_headers,
)
from audiohook_client import serving as serving_audiohook
from audiohook_client import session as audiohook_session
from fuzz_checks import SHRINK, Faults, exception_name, fault, fuzz_settings, last_exception
from fuzz_inputs import JSON_VALUES, NASTY, deep_json
from twilio_client import (
    FORMAT,
    PATIENT,
    Served,
    Twilio,
    media_body,
    start_body,
    twilio,
)
from twilio_client import serving as serving_twilio
from voice_models import voice_repo  # noqa: F401

T = TypeVar("T")

pytestmark = [
    # each test takes seconds (make check leaves it out; the protocol suites keep the
    # regression tests of what the fuzz found)
    pytest.mark.slow,
    # Hypothesis warns when the global ``random`` moves while it draws an example, whoever
    # moved it: here the servers and the bystanders run in threads of this process, and
    # each WebSocket keepalive ping (every 20 s, both sides) draws its payload from
    # ``random``. The strategies themselves use none.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

AUDIOHOOK_EXAMPLES = 60
TWILIO_EXAMPLES = 60
IDLE_S = 1.0  # both endpoints' idle timeout: an idle conversation takes seconds
MAX_FRAME = 4096  # audiohook.max_frame_bytes
MAX_MESSAGE = 4096  # twilio.max_message_bytes
EXAMPLE_GUARD_S = 20.0  # one conversation, its end included (a hang is a fault)
SETTLE_S = 5.0  # how long the server gets to come back to rest after one
MAX_FAULTS = 12  # a fuzz run stops after this many (each may wait out SETTLE_S)
IDLE_SOCKETS = 1000  # per endpoint
CONNECTING = 64  # upgrades in flight at once while opening them
IDLE_GUARD_S = 60.0  # all of them, opened and closed (a failure guard)
RSS_BOUND_MB = 50.0
KEY, SECRET = "key-signed", b"0123456789abcdef0123456789abcdef"
PLAIN = "key-plain"  # a key with no client secret: its upgrades are not signed
BYSTANDER_SID = "MZbystander"
FUZZ_SID = "MZfuzz"  # every fuzzed stream's (each ends before the next)
SILENCE_ULAW = b"\xff" * 800  # 100 ms of μ-law silence
SILENCE_STEREO = b"\xff" * 1600  # 100 ms of stereo PCMU silence

#: AudioHook's refusals after the upgrade (a ``disconnect``), as the README lists them;
#: ``client_gone`` is a client that hung up without ``close``.
AUDIOHOOK_REFUSALS = {
    "bad_json",
    "bad_message",
    "unknown_type",
    "bad_parameters",
    "bad_seq",
    "bad_serverseq",
    "wrong_id",
    "wrong_organization",
    "not_open",
    "unexpected_open",
    "audio_before_open",
    "audio_while_paused",
    "bad_frame",
    "too_large",
    "unsupported_media",
    "duplicate_session",
    "quota",
    "server_full",
    "idle",
}
#: ... and before it (an HTTP status instead of ``101``)
AUDIOHOOK_UPGRADE = {
    "unauthorized": 401,
    "bad_signature": 401,
    "stale_signature": 401,
    "replayed_signature": 401,
    "bad_request": 400,
    "key_quota": 429,
    "unavailable": 503,
}
AUDIOHOOK_REASONS = AUDIOHOOK_REFUSALS | set(AUDIOHOOK_UPGRADE) | {"client_gone"}
#: The close codes an AudioHook socket may end with: ours (1000 after ``closed``, 1008 after
#: a refusal, 1009 after one for size) and the WebSocket layer's (1007 text not UTF-8,
#: 1009 over its 1 MiB cap); never 1011.
AUDIOHOOK_CODES = {1000, 1007, 1008, 1009}
#: Twilio's reasons and the close codes of each (README; 1007 is the WebSocket layer's for
#: text that is not UTF-8); ``disconnected`` is a peer that hung up without ``stop``.
UNSUPPORTED, POLICY = {1003}, {1008}
TWILIO_CODES: dict[str, set[int] | None] = {
    "not_json": {1003, 1007},
    "bad_message": UNSUPPORTED,
    "unknown_event": UNSUPPORTED,
    "binary": UNSUPPORTED,
    "bad_base64": UNSUPPORTED,
    "unsupported_format": UNSUPPORTED,
    "before_start": POLICY,
    "bad_sequence": POLICY,
    "bad_order": POLICY,
    "stream_mismatch": POLICY,
    "unexpected_track": POLICY,
    "bad_timestamp": POLICY,
    "session_exists": POLICY,
    "quota": POLICY,
    "idle": POLICY,
    "after_stop": POLICY,
    "too_big": {1009},
    "too_many_sessions": {1013},
    "disconnected": None,
}
TWILIO_CLOSES = {1000, 1003, 1007, 1008, 1009, 1013}


# -- where the clients run, and what the servers log -------------------------------------


class Clients:
    """An event loop in a thread for every client: the bystanders talk on it all along,
    while the test's thread runs one conversation at a time on it and checks the server
    between them (without an event loop of its own, as Hypothesis wants)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="clients", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], guard_s: float = EXAMPLE_GUARD_S) -> T:
        """``coro``'s result; ``TimeoutError`` (and ``coro`` cancelled) after ``guard_s``."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(guard_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Tracebacks(logging.Handler):
    """Every record of this process logged with a traceback or at ERROR and above: the
    servers run in threads here, so their log is this process's."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(logging.Formatter().format(record))

    def since(self, mark: int) -> str:
        """The first record logged after ``mark`` (``len(records)`` then), as
        ``ExcName: message at file:line in func`` where it has a traceback."""
        if len(self.records) <= mark:
            return ""
        text = self.records[mark]
        return last_exception(text) or text.splitlines()[0]


def settle(check: Callable[[], bool], guard_s: float = SETTLE_S) -> bool:
    """Whether ``check()`` comes true within ``guard_s`` (a failure guard)."""
    deadline = time.monotonic() + guard_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def counts(transport: str) -> dict[str, float]:
    """``emostream_protocol_errors_total{transport}`` in this process, by reason."""
    out: dict[str, float] = {}
    for family in metrics.PROTOCOL_ERRORS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["transport"] == transport:
                out[sample.labels["reason"]] = sample.value
    return out


def counted_since(transport: str, before: dict[str, float]) -> dict[str, int]:
    return {
        reason: int(value - before.get(reason, 0.0))
        for reason, value in counts(transport).items()
        if value != before.get(reason, 0.0)
    }


def leaked(before: list[str], after: list[str]) -> str:
    """The tasks in ``after`` and not in ``before`` (each task's name is its own): ''
    when every task started in between has ended."""
    extra = Counter(after) - Counter(before)
    return ", ".join(f"{n}x {name}" if n > 1 else name for name, n in extra.items())


def rss_mb() -> float:
    """This process's resident memory (clients and servers together)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the steps of a conversation ---------------------------------------------------------


@dataclass
class Message:
    """A protocol message: the client's envelope (AudioHook ``seq``, ``serverseq``,
    ``position``; Twilio ``sequenceNumber``, ``streamSid``) around ``type`` and ``body``,
    then ``override`` replaces envelope fields, ``drop`` removes them, and ``seq_shift``
    moves the sequence number off the one due."""

    type: str
    body: Any = None
    override: dict[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    seq_shift: int = 0


@dataclass
class Text:
    """A text frame: ``text`` repeated ``times`` (a huge one prints short)."""

    text: str
    times: int = 1

    @property
    def size(self) -> int:
        return len(self.text) * self.times


@dataclass
class NotUtf8:
    """A text frame whose bytes are not UTF-8."""

    data: bytes


@dataclass
class Frame:
    """A binary frame of ``size`` bytes of ``fill``."""

    size: int
    fill: bytes = b"\xff"

    def data(self) -> bytes:
        return (self.fill * (self.size // len(self.fill) + 1))[: self.size]


@dataclass
class Pause:
    seconds: float


Step = Message | Text | NotUtf8 | Frame | Pause
End = Literal["close", "hangup", "abort", "idle"]


@dataclass
class Conversation:
    """One client, start to end. ``valid``: every step is a valid message in a valid
    order, so the server must refuse nothing but silence."""

    steps: list[Step]
    end: End
    valid: bool
    upgrade: str = "plain"


@dataclass
class Heard:
    """What one conversation got from the server."""

    status: int | None = None  # of a refused upgrade
    body: bytes = b""
    messages: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # malformed server messages
    code: int | None = None  # the close code the server sent first (None: we closed first)
    reason: str = ""
    sent: int = 0  # steps sent before the socket closed
    unreadable: list[str] = field(default_factory=list)  # the session over HTTP, meanwhile

    def types(self) -> list[str]:
        return [str(m.get("type")) for m in self.messages]

    def __str__(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status} {self.body[:200]!r}"
        return f"{self.types()} close {self.code} {self.reason!r}, {self.sent} steps sent" + (
            f", problems {self.problems}" if self.problems else ""
        )


async def send_junk(ws: ClientConnection, step: Step) -> None:
    """Send a step that is no protocol message (or wait, for a pause)."""
    if isinstance(step, NotUtf8):
        await ws.send(step.data, text=True)
    elif isinstance(step, Text):
        await ws.send(step.text * step.times)
    elif isinstance(step, Frame):
        await ws.send(step.data())
    elif isinstance(step, Pause):
        await asyncio.sleep(step.seconds)


async def read_session(port: int, session_id: str, heard: Heard) -> None:
    """The session's status and summary while the call is on: JSON, or 404 where there is
    no session (yet, or any more); else into ``heard.unreadable``. Whatever a client said,
    what the server kept of it must be readable."""
    base = f"http://127.0.0.1:{port}/v1/sessions/{session_id}"
    async with httpx.AsyncClient(trust_env=False, timeout=EXAMPLE_GUARD_S / 4) as http:
        for url in (base, f"{base}/summary"):
            try:
                r = await http.get(url)
                if r.status_code == 200:
                    r.json()
                elif r.status_code != 404:
                    heard.unreadable.append(f"GET {url}: {r.status_code} {r.text[:200]}")
            except (httpx.HTTPError, ValueError) as exc:
                heard.unreadable.append(f"GET {url}: {exc!r}")


def received(ws: ClientConnection, heard: Heard) -> None:
    """The close frame the server sent, if it closed first."""
    protocol = ws.protocol
    if protocol.close_rcvd is not None and protocol.close_rcvd_then_sent is not False:
        heard.code, heard.reason = protocol.close_rcvd.code, protocol.close_rcvd.reason


async def until(check: Callable[[], bool]) -> None:
    """Wait for ``check()`` (at most half an example's guard: the judge sees the rest)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EXAMPLE_GUARD_S / 2):
            while not check():
                await asyncio.sleep(0.01)


async def finish(ws: ClientConnection, end: End, done: Callable[[], bool]) -> None:
    """End a conversation: drop the TCP connection, close the WebSocket, or wait for
    ``done()`` (what the server owes after our close transaction or our silence)."""
    if end == "abort":
        ws.transport.abort()
        return
    if end != "hangup":
        await until(done)
    await ws.close()


# -- strategies shared by both protocols ---------------------------------------------------

#: Odd strings a valid message may carry: fuzz_inputs' but the lone surrogate, which is
#: no text (``"\\udcff"`` in JSON is refused as not JSON) and only ever a mutation here.
ODD_TEXT = [t for t in NASTY if not 0xD800 <= ord(t[0]) <= 0xDFFF]

#: Values a mutated field takes: wrong types, out of range, huge, negative, odd strings.
ODD_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            1.5,
            2**31,
            2**63,
            10**30,
            -(10**30),
            "",
            "1",
            "-1",
            "9" * 30,
            "PT-1S",
            "P1D",
            "PT1e9S",
            "PT" + "9" * 400 + "S",
            "PT1" + "0" * 20 + "S",
            [],
            {},
            "x" * 300,
        ]
    ),
    st.sampled_from(NASTY),
    JSON_VALUES,
)

JUNK_TEXT: st.SearchStrategy[Text] = st.one_of(
    st.text(max_size=60).map(Text),
    JSON_VALUES.map(lambda v: Text(json.dumps(v))),
    st.sampled_from(
        [
            Text(deep_json(100, "object").decode()),
            Text(deep_json(1000, "list").decode()),
            Text(deep_json(1000, "object").decode()),
            Text(""),
            Text("{"),
            Text("null"),
            Text("{}"),
            Text('{"type": "open"}'),
            Text('{"event": "media"}'),
            Text("\x00"),
            Text("x", MAX_FRAME + 1),
            Text("x", WS_MAX_BYTES + 1),
        ]
    ),
)
NOT_UTF8: st.SearchStrategy[NotUtf8] = st.sampled_from(
    [b"\xff", b"\xc3", b'{"type": "\xff"}', b"\xed\xa0\x80", b"\x80abc"]
).map(NotUtf8)
FRAMES: st.SearchStrategy[Frame] = st.builds(
    Frame,
    st.one_of(
        st.integers(0, 64),
        st.sampled_from([MAX_FRAME - 1, MAX_FRAME, MAX_FRAME + 1, WS_MAX_BYTES + 1]),
    ),
    st.sampled_from([b"\xff", b"\x00", b"\x7f\x80\x01"]),
)
JUNK: st.SearchStrategy[Step] = st.one_of(
    JUNK_TEXT, NOT_UTF8, FRAMES, st.sampled_from([Pause(0.05), Pause(0.2)])
)
#: How conversations end: the close transaction (AudioHook ``close``, Twilio ``stop``), a
#: WebSocket close, a dropped TCP connection, or silence until the server speaks (its idle
#: timeout; an AudioHook client then closes as Genesys does).
ENDS: st.SearchStrategy[End] = st.sampled_from(["close", "hangup", "abort", "idle"])
#: What a step is: valid in its place, a valid message out of its place, a mutated
#: message, or junk.
KINDS = st.sampled_from(["valid"] * 5 + ["mutated"] * 2 + ["junk", "misplaced"])
FAULTS = st.sampled_from(["mutated"] * 3 + ["junk"] * 2 + ["misplaced"] * 2)


@st.composite
def step_kinds(draw: st.DrawFn, most: int = 10) -> list[str]:
    """The kind of each step of a conversation: all valid (a call that must go through),
    valid but for one fault anywhere (each refusal from every state a call reaches), or
    any mix (what comes after a refusal)."""
    shape = draw(st.sampled_from(["valid"] * 3 + ["one-fault"] * 4 + ["mixed"] * 3))
    n = draw(st.integers(1, most))
    if shape == "valid":
        return ["valid"] * n
    if shape == "mixed":
        return [draw(KINDS) for _ in range(n)]
    kinds = ["valid"] * n
    kinds[draw(st.integers(0, n - 1))] = draw(FAULTS)
    return kinds


def mutate(draw: st.DrawFn, message: Message, envelope: tuple[str, ...]) -> Message:
    """``message`` with one thing wrong: an envelope field replaced or dropped, the
    sequence number off, or a field of its body replaced, dropped or added."""
    how = draw(st.sampled_from(["override", "drop", "seq", "body", "body", "type"]))
    if how == "override":
        message.override[draw(st.sampled_from(envelope))] = draw(ODD_VALUES)
    elif how == "drop":
        message.drop = (draw(st.sampled_from(envelope)),)
    elif how == "seq":
        message.seq_shift = draw(st.sampled_from([-2, -1, 1, 2, 1000, -(10**6)]))
    elif how == "type":
        message.type = draw(st.sampled_from(["", "dance", "OPEN", "opened", "pong", "Start"]))
    elif isinstance(message.body, dict) and message.body:
        body = dict(message.body)
        name = draw(st.sampled_from(sorted(body)))
        change = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if change == "replace":
            body[name] = draw(ODD_VALUES)
        elif change == "drop":
            del body[name]
        else:
            body[draw(st.sampled_from(NASTY))] = draw(ODD_VALUES)
        message.body = body
    else:
        message.body = draw(ODD_VALUES)
    return message


# -- AudioHook -----------------------------------------------------------------------------

#: What an ``open`` may offer, and the bytes one sample takes on all its channels.
HOOK_MEDIA: dict[str, tuple[list[dict[str, Any]], int]] = {
    "pcmu-stereo": ([STEREO], 2),
    "pcmu-mono": ([MONO], 1),
    "l16-stereo": ([{**STEREO, "format": "L16"}], 4),
    "agent-only": ([{**MONO, "channels": ["internal"]}], 1),
    "opus-then-pcmu": ([{**STEREO, "format": "opus"}, STEREO], 2),
}
HOOK_ENVELOPE = ("version", "id", "type", "seq", "serverseq", "position", "parameters")
#: How the upgrade goes: valid (signed or not), or refused (401, 400), or a session id
#: open already (the bystander's). The rare ones in the middle: Hypothesis favours the
#: ends of a list.
HOOK_UPGRADES = st.sampled_from(
    ["plain"] * 11 + ["unknown-key", "unsigned", "not-a-uuid", "bystander-id"] + ["signed"] * 11
)


def hook_valid_step(draw: st.DrawFn, phase: str, unit: int) -> tuple[Step, str, int]:
    """A message valid in ``phase`` (connected, open, paused), and the phase and sample
    size after it."""
    kinds = {
        "connected": ["open"] * 4 + ["ping", "update", "error"],
        "open": ["audio"] * 5 + ["ping", "update", "paused", "discarded", "error"],
        "paused": ["resumed", "resumed", "ping", "update", "discarded"],
    }[phase]
    kind = draw(st.sampled_from(kinds))
    if kind == "open":
        name = draw(st.sampled_from(sorted(HOOK_MEDIA)))
        media, unit = HOOK_MEDIA[name]
        probe = draw(st.integers(0, 5)) == 0  # Genesys' connection probe: no session
        conversation = NULL_UUID if probe else str(draw(st.uuids()))
        return Message("open", open_parameters(media, conversation)), "open", unit
    if kind == "audio":
        fill = draw(st.sampled_from([b"\xff", b"\x00", b"\x7f\x80"]))
        return Frame(draw(st.integers(0, MAX_FRAME // unit)) * unit, fill), phase, unit
    bodies: dict[str, dict[str, Any]] = {
        "ping": {"rtt": "PT0.012S"},
        "update": {"language": draw(st.sampled_from(["fr-FR", "", *ODD_TEXT]))},
        "error": {"code": 500, "message": "a client error"},
        "paused": {},
        "resumed": {"start": "PT0S", "discarded": "PT0.5S"},
        "discarded": {"start": "PT1S", "discarded": "PT0.25S"},
    }
    body = bodies[kind]
    after = {"paused": "paused", "resumed": "open"}.get(kind, phase)
    return Message(kind, body), after, unit


def hook_misplaced(draw: st.DrawFn, phase: str) -> Step:
    """A valid message where it is not: audio or a pause before ``open``, a second
    ``open``, audio while paused."""
    kind = draw(
        st.sampled_from(
            {
                "connected": ["audio", "paused", "resumed", "discarded"],
                "open": ["open"],
                "paused": ["audio", "open"],
            }[phase]
        )
    )
    if kind == "audio":
        return Frame(320)
    body = {"open": open_parameters(), "paused": {}}.get(
        kind, {"start": "PT0S", "discarded": "PT0.5S"}
    )
    return Message(kind, body)


#: Every format an ``opened`` may name: PCMU or L16 at 8 kHz, one or both channels.
READ_MEDIA = [
    {**STEREO, "format": fmt, "channels": channels}
    for fmt in ("PCMU", "L16")
    for channels in (["external"], ["internal"], ["external", "internal"], ["internal", "external"])
]
#: Media offers no server reads: another rate or format, channels unknown, twice or
#: none, a rate of another type, no offer at all.
ODD_MEDIA = [
    [{**STEREO, "rate": 16000}],
    [{**STEREO, "format": "opus"}],
    [{**STEREO, "channels": ["external", "external"]}],
    [{**STEREO, "channels": []}],
    [{**STEREO, "channels": ["external", "internal", "other"]}],
    [{**MONO, "channels": ["agent"]}],
    [{**STEREO, "type": "video"}],
    [{**STEREO, "rate": "8000"}],
    [],
]
#: Durations a gap or a ping may claim: negative, not ISO 8601, a year and more, digits
#: enough to read as infinite.
ODD_DURATIONS = ["PT-1S", "PT1e9S", "P1D", "PT", "1.5", f"PT{366 * 86400 + 1}S"]
ODD_DURATIONS += [f"PT1{'0' * 20}S", f"PT{'9' * 400}S"]


def hook_mutate(draw: st.DrawFn, message: Message) -> Message:
    """One thing wrong, as ``mutate`` does, or one the AudioHook server checks: an offer
    of media it does not read, another organization, an odd duration."""
    body = message.body if isinstance(message.body, dict) else {}
    if draw(st.booleans()):
        if message.type == "open":
            if draw(st.booleans()):
                body["media"] = draw(st.sampled_from(ODD_MEDIA))
            else:
                body["organizationId"] = str(draw(st.uuids()))
            return message
        if message.type in ("resumed", "discarded", "ping"):
            name = draw(
                st.sampled_from(["rtt"] if message.type == "ping" else ["start", "discarded"])
            )
            body[name] = draw(st.sampled_from(ODD_DURATIONS))
            return message
    return mutate(draw, message, HOOK_ENVELOPE)


@st.composite
def hook_conversations(draw: st.DrawFn) -> Conversation:
    upgrade = draw(HOOK_UPGRADES, label="upgrade")
    kinds = draw(step_kinds(), label="kinds")
    steps: list[Step] = []
    phase, unit = "connected", 2
    for kind in kinds:
        if kind == "junk":
            steps.append(draw(JUNK))
        elif kind == "misplaced":
            steps.append(hook_misplaced(draw, phase))
        else:
            step, after, size = hook_valid_step(draw, phase, unit)
            if kind == "valid":
                phase, unit = after, size
            elif isinstance(step, Message):
                step = hook_mutate(draw, step)
            else:  # audio of partial samples, or over the limit
                step = Frame(draw(st.sampled_from([unit + 1, MAX_FRAME + 1, MAX_FRAME + unit])))
            steps.append(step)
    valid = upgrade in ("plain", "signed") and all(k == "valid" for k in kinds)
    return Conversation(steps, draw(ENDS, label="end"), valid, upgrade)


async def hook_send(c: Client, step: Step) -> None:
    """A message in the client's envelope (the next ``seq``, the last ``serverseq``, the
    position), then mutated as ``step`` says; audio through the client (its position)."""
    if isinstance(step, Message):
        message = c.message(step.type, step.body)
        message.update(step.override)  # "parameters" too, which is message()'s own argument
        for name in step.drop:
            message.pop(name, None)
        if step.seq_shift:
            message["seq"] = c.seq + step.seq_shift
        await c.ws.send(json.dumps(message))
    elif isinstance(step, Frame):
        await c.audio(step.data())
    else:
        await send_junk(c.ws, step)


async def hook_read(c: Client, heard: Heard) -> None:
    """Every server message, checked as it comes: JSON text, version 2, this session's
    id, ``seq`` one more than the last."""
    try:
        async for data in c.ws:
            if not isinstance(data, str):
                heard.problems.append(f"a binary message of {len(data)} bytes")
                continue
            try:
                m = json.loads(data)
            except ValueError:
                heard.problems.append(f"not JSON: {data[:80]!r}")
                continue
            if not isinstance(m, dict):
                heard.problems.append(f"not an object: {data[:80]!r}")
                continue
            if m.get("version") != "2" or m.get("id") != c.id:
                heard.problems.append(f"not version 2 of this session: {data[:200]}")
            if m.get("seq") != c.serverseq + 1 or not isinstance(m.get("parameters"), dict):
                heard.problems.append(f"seq {m.get('seq')} after {c.serverseq}: {data[:200]}")
            if isinstance(m.get("seq"), int):
                c.serverseq = m["seq"]
            heard.messages.append(m)
    except ConnectionClosed:
        pass
    finally:
        received(c.ws, heard)


async def hook_conversation(port: int, conv: Conversation, bystander: str) -> Heard:
    """Run ``conv`` on a fresh AudioHook socket to ``port``."""
    heard = Heard()
    key, secret, sid = {
        "plain": (PLAIN, b"", None),
        "signed": (KEY, SECRET, None),
        "unknown-key": ("nobody", b"", None),
        "unsigned": (KEY, b"", None),
        "not-a-uuid": (PLAIN, b"", "not-a-uuid"),
        "bystander-id": (PLAIN, b"", bystander),
    }[conv.upgrade]
    headers = upgrade_headers(port, key, secret, sid)
    try:
        ws = await connect(
            f"ws://127.0.0.1:{port}/v1/audiohook",
            additional_headers=headers,
            open_timeout=EXAMPLE_GUARD_S,
            max_size=2**20,
            proxy=None,  # loopback only, whatever the environment says
        )
    except InvalidStatus as exc:
        heard.status, heard.body = exc.response.status_code, bytes(exc.response.body or b"")
        return heard
    c = Client(ws, headers["Audiohook-Session-Id"])
    reader = asyncio.create_task(hook_read(c, heard))
    try:
        for step in conv.steps:
            if reader.done():
                break
            try:
                await hook_send(c, step)
            except ConnectionClosed:
                break
            heard.sent += 1
        await read_session(port, c.id, heard)
        if conv.end == "idle":  # silence until the server speaks (its disconnect)
            await until(
                lambda: reader.done() or bool({"disconnect", "closed"} & set(heard.types()))
            )
        if conv.end in ("close", "idle") and "closed" not in heard.types():
            with contextlib.suppress(ConnectionClosed):  # as Genesys ends a call
                await c.send("close", {"reason": "end"})

        def done() -> bool:
            return reader.done() or "closed" in heard.types()

        await finish(ws, conv.end, done)
    finally:
        ws.transport.abort()  # whatever is left of it
        await asyncio.wait([reader], timeout=EXAMPLE_GUARD_S / 4)
        reader.cancel()
    return heard


def layer_codes(conv: Conversation, heard: Heard) -> set[int]:
    """The close codes the WebSocket layer itself answers the steps sent with (1007 text
    not UTF-8, 1009 over its cap). It reads ahead of the route, so its close may come
    before or after the route's answer to an earlier step: the count is then the route's
    refusal, the layer's, or none (after the close transaction)."""
    codes = set()
    for step in conv.steps[: heard.sent + 1]:  # and the one being sent when it closed
        if isinstance(step, NotUtf8):
            codes.add(1007)
        elif isinstance(step, Frame | Text) and step.size > WS_MAX_BYTES:
            codes.add(1009)
    return codes


def hook_judge(conv: Conversation, heard: Heard, counted: dict[str, int]) -> None:
    """The invariants of one AudioHook conversation (a ``Fault`` per broken one)."""
    where = f"{conv}\n  heard: {heard}\n  counted: {counted}"
    bad_upgrade = {
        "unknown-key": "unauthorized",
        "unsigned": "bad_signature",
        "not-a-uuid": "bad_request",
    }.get(conv.upgrade)
    if heard.status is not None:
        try:
            error = json.loads(heard.body).get("error")
        except (ValueError, AttributeError):
            error = None
        if bad_upgrade is None or error != bad_upgrade or counted != {bad_upgrade: 1}:
            raise fault(f"audiohook upgrade answered {heard.status}", where)
        if heard.status != AUDIOHOOK_UPGRADE[bad_upgrade]:
            raise fault(f"audiohook {bad_upgrade} answered {heard.status}", where)
        return
    if bad_upgrade is not None:
        raise fault(f"audiohook upgrade accepted: {conv.upgrade}", where)
    if heard.problems:
        raise fault("audiohook malformed server message", where)
    if heard.code == 1011 or "internal_error" in counted:
        raise fault("audiohook internal error", where)
    if unknown := set(counted) - AUDIOHOOK_REASONS:
        raise fault(f"audiohook counted {sorted(unknown)}", where)
    if sum(counted.values()) > 1:
        raise fault("audiohook counted one connection more than once", where)
    if heard.code is not None and heard.code not in AUDIOHOOK_CODES:
        raise fault(f"audiohook closed with {heard.code}", where)
    for m in heard.messages:
        media = m["parameters"].get("media") if m.get("type") == "opened" else [STEREO]
        if not (isinstance(media, list) and len(media) == 1 and media[0] in READ_MEDIA):
            raise fault("audiohook opened with media it does not read", where)
    types = heard.types()
    if "disconnect" in types:
        first = types.index("disconnect")
        parameters = heard.messages[first]["parameters"]
        info = parameters.get("info")
        if parameters.get("reason") != "error" or not isinstance(info, str) or not info.strip():
            raise fault("audiohook disconnect without reason error and an info", where)
        if any(t != "closed" for t in types[first + 1 :]):
            raise fault("audiohook message after disconnect", where)
        if not (set(counted) & AUDIOHOOK_REFUSALS):
            raise fault("audiohook disconnect not counted as a refusal", where)
    elif heard.code not in (None, 1000, *layer_codes(conv, heard)) and not counted:
        raise fault(f"audiohook close {heard.code} not counted", where)
    if conv.valid:
        hook_judge_valid(conv, heard, counted, where)


def hook_judge_valid(conv: Conversation, heard: Heard, counted: dict[str, int], where: str) -> None:
    """A conversation of valid messages: refused for nothing but silence, every request
    answered."""
    types = heard.types()
    if conv.end == "idle":
        if counted != {"idle": 1}:
            raise fault("audiohook valid call: silence not counted as idle", where)
        return
    if conv.end == "hangup" or conv.end == "abort":
        if set(counted) - {"client_gone"}:
            raise fault("audiohook valid call refused", where)
        return
    if counted or "disconnect" in types or "closed" not in types:
        raise fault("audiohook valid call refused or not closed", where)
    sent = Counter(s.type for s in conv.steps if isinstance(s, Message))
    answers = Counter(types)
    for request, answer in (("ping", "pong"), ("update", "updated"), ("open", "opened")):
        if answers[answer] != sent[request]:
            raise fault(f"audiohook valid call: {request} unanswered", where)


# -- Twilio --------------------------------------------------------------------------------

TWILIO_ENVELOPE = ("event", "sequenceNumber", "streamSid")
#: Custom parameters (``<Parameter>``): ordinary, and the odd strings of fuzz_inputs.py.
CUSTOM = st.dictionaries(
    st.sampled_from(["agent", "queue", "é", "\x00", "\U0001f600", "x" * 64]),
    st.sampled_from(["1", "", "x" * 1024, *ODD_TEXT]),
    max_size=3,
)


def twilio_valid_step(
    draw: st.DrawFn, started: tuple[str, ...] | None, ms: dict[str, int], sid: str, first: bool
) -> tuple[Message, tuple[str, ...] | None]:
    """A message valid after ``started`` (its tracks, or None before ``start``), and the
    tracks after it; ``ms`` holds each track's last timestamp."""
    if started is None:
        if first and draw(st.booleans()):
            return Message("connected", None, {"protocol": "Call", "version": "1.0.0"}), None
        tracks = draw(st.sampled_from([("inbound",), ("outbound",), ("inbound", "outbound")]))
        body = start_body(sid, tracks, draw(CUSTOM))
        return Message("start", body), tracks
    kind = draw(st.sampled_from(["media"] * 5 + ["dtmf", "mark"]))
    if kind == "dtmf":
        return Message("dtmf", {"track": "inbound_track", "digit": "5"}), started
    if kind == "mark":
        return Message("mark", {"name": draw(st.sampled_from(["m1", "", *ODD_TEXT]))}), started
    track = draw(st.sampled_from(started))
    ms[track] = ms.get(track, 0) + draw(st.sampled_from([0, 20, 100, 5000]))
    size = draw(st.sampled_from([0, 1, 160, 800]))
    return Message("media", media_body(track, ms[track], b"\xff" * size)), started


def twilio_misplaced(
    draw: st.DrawFn, started: tuple[str, ...] | None, ms: dict[str, int], sid: str
) -> Message:
    """A valid message where it is not: media, dtmf or mark before ``start``; a second
    ``start``, ``connected`` after it, media of a track it did not announce or back in
    time."""
    if started is None:
        kind = draw(st.sampled_from(["media", "dtmf", "mark"]))
        body = {"dtmf": {"digit": "1"}, "mark": {"name": "m"}}.get(kind)
        return Message(kind, body or media_body("inbound", 0, SILENCE_ULAW))
    kind = draw(st.sampled_from(["start", "connected", "track", "back"]))
    others = [t for t in ("inbound", "outbound") if t not in started]
    if kind == "connected":
        return Message("connected", None, {"protocol": "Call", "version": "1.0.0"})
    if kind == "track" and others:
        return Message("media", media_body(others[0], 0, SILENCE_ULAW))
    if kind == "back" and ms.get(started[0], 0) > 0:
        return Message("media", media_body(started[0], ms[started[0]] - 1, SILENCE_ULAW))
    return Message("start", start_body(sid, started))


@st.composite
def twilio_conversations(draw: st.DrawFn) -> Conversation:
    upgrade = draw(st.sampled_from(["own"] * 7 + ["bystander-sid"] + ["own"] * 7), label="sid")
    sid = BYSTANDER_SID if upgrade == "bystander-sid" else FUZZ_SID
    kinds = draw(step_kinds(), label="kinds")
    steps: list[Step] = []
    started: tuple[str, ...] | None = None
    ms: dict[str, int] = {}
    for i, kind in enumerate(kinds):
        if kind == "junk":
            steps.append(draw(JUNK))
        elif kind == "misplaced":
            steps.append(twilio_misplaced(draw, started, ms, sid))
        else:
            step, after = twilio_valid_step(draw, started, ms, sid, first=i == 0)
            if kind == "valid":
                started = after
            else:
                step = twilio_mutate(draw, step)
            steps.append(step)
    end = draw(ENDS, label="end")
    valid = upgrade == "own" and all(k == "valid" for k in kinds)
    return Conversation(steps, end, valid and (started is not None or end != "close"), upgrade)


def twilio_mutate(draw: st.DrawFn, message: Message) -> Message:
    """One thing wrong, as ``mutate`` does, or one the Twilio parser checks: a format other
    than μ-law 8 kHz mono, tracks none or twice or unknown, a payload not base64 or over the
    limit, a timestamp back in time, too many or too long custom parameters."""
    body = message.body if isinstance(message.body, dict) else {}
    special: list[Callable[[], None]] = []
    if message.type == "start":

        def fmt() -> None:
            key = draw(st.sampled_from(sorted(FORMAT)))
            body["mediaFormat"] = {**FORMAT, key: draw(st.sampled_from(["audio/l16", 16000, 2]))}

        def tracks() -> None:
            body["tracks"] = draw(
                st.sampled_from([[], ["inbound", "inbound"], ["both"], "inbound", None])
            )

        def custom() -> None:
            body["customParameters"] = draw(
                st.sampled_from(
                    [
                        {f"p{i}": "v" for i in range(65)},
                        {"p": "x" * 1025},
                        {"": "v"},
                        {"p": 5},
                        {"x" * 65: "v"},
                        [],
                    ]
                )
            )

        def sids() -> None:
            name = draw(st.sampled_from(["streamSid", "accountSid", "callSid"]))
            body[name] = draw(st.sampled_from(["", "MZ other", "x" * 65, "MZ\udcff", 5]))

        special = [fmt, tracks, custom, sids]
    elif message.type == "media":

        def payload() -> None:
            body["payload"] = draw(
                st.sampled_from(["not base64!", "//8", "=" * 8, "//8=" * (MAX_MESSAGE // 4)])
            )

        def timestamp() -> None:
            body["timestamp"] = draw(st.sampled_from(["-1", "1e3", "9" * 16, "0x10", 2**53]))

        def track() -> None:
            body["track"] = draw(st.sampled_from(["both", "inbound_track", "", None]))

        special = [payload, timestamp, track]
    if draw(st.booleans()) and special:
        draw(st.sampled_from(special))()
        message.body = body
        return message
    return mutate(draw, message, TWILIO_ENVELOPE)


async def twilio_send(t: Twilio, step: Step) -> None:
    """A message numbered as the stream goes, then mutated as ``step`` says."""
    if isinstance(step, Message):
        message = t.message(step.type, step.body)
        message.update(step.override)  # "event" too, which is message()'s own argument
        for name in step.drop:
            message.pop(name, None)
        if step.seq_shift:
            message["sequenceNumber"] = str(t.seq + step.seq_shift)
        await t.ws.send(json.dumps(message))
    else:
        await send_junk(t.ws, step)


async def twilio_read(ws: ClientConnection, heard: Heard) -> None:
    """Until the socket closes: the server sends nothing on a Media Stream."""
    try:
        async for data in ws:
            heard.problems.append(f"the server sent {data[:80]!r}")
    except ConnectionClosed:
        pass
    finally:
        received(ws, heard)


async def twilio_conversation(served: Served, conv: Conversation, sid: str) -> Heard:
    """Run ``conv`` on a fresh Media Stream socket of stream ``sid``."""
    heard = Heard()
    async with twilio(served, stream=sid) as t:
        reader = asyncio.create_task(twilio_read(t.ws, heard))
        try:
            for step in conv.steps:
                if reader.done():
                    break
                try:
                    await twilio_send(t, step)
                except ConnectionClosed:
                    break
                heard.sent += 1
            await read_session(served.port, sid, heard)
            if conv.end == "close" and not reader.done():
                with contextlib.suppress(ConnectionClosed):
                    await t.stop()
            await finish(t.ws, conv.end, reader.done)
        finally:
            t.ws.transport.abort()
            await asyncio.wait([reader], timeout=EXAMPLE_GUARD_S / 4)
            reader.cancel()
    return heard


def twilio_judge(conv: Conversation, heard: Heard, counted: dict[str, int]) -> None:
    """The invariants of one Twilio conversation (a ``Fault`` per broken one)."""
    where = f"{conv}\n  heard: {heard}\n  counted: {counted}"
    if heard.problems:
        raise fault("twilio server sent a message", where)
    if heard.code == 1011 or "internal" in counted:
        raise fault("twilio internal error", where)
    if unknown := set(counted) - set(TWILIO_CODES):
        raise fault(f"twilio counted {sorted(unknown)}", where)
    total = sum(counted.values())
    if total > 1:
        raise fault("twilio counted one stream more than once", where)
    code = heard.code
    if code is None and conv.end in ("close", "idle") and not layer_codes(conv, heard):
        # (a connection the WebSocket layer fails is closed at once: its close frame may be
        # lost to the reset of a client still sending)
        raise fault(f"twilio socket not closed by the server after {conv.end}", where)
    if code is not None:
        if code not in TWILIO_CLOSES:
            raise fault(f"twilio closed with {code}", where)
        if code == 1000:
            if counted or heard.reason not in ("stream stopped", "session ended"):
                raise fault("twilio normal close counted or unexplained", where)
        elif code in layer_codes(conv, heard):
            pass  # counted: the stream's own refusal, the layer's, or none after stop
        elif total != 1:
            raise fault(f"twilio close {code} not counted", where)
        else:
            (reason,) = counted
            documented = TWILIO_CODES[reason]
            if documented is not None and code not in documented:
                raise fault(f"twilio {reason} closed with {code}, not {documented}", where)
            if documented is not None and not heard.reason:
                raise fault(f"twilio {reason} closed without a reason", where)
    if conv.valid:
        if conv.end == "close" and (code, heard.reason) != (1000, "stream stopped"):
            raise fault("twilio valid stream not stopped normally", where)
        if conv.end == "idle" and counted != {"idle": 1}:
            raise fault("twilio valid stream: silence not counted as idle", where)
        if conv.end in ("hangup", "abort") and set(counted) - {"disconnected"}:
            raise fault("twilio valid stream refused", where)


# -- servers, bystanders, clients ------------------------------------------------------------


@pytest.fixture(scope="module")
def clients() -> Iterator[Clients]:
    c = Clients()
    yield c
    c.close()


@pytest.fixture()
def tracebacks() -> Iterator[Tracebacks]:
    """Installed for one test: uvicorn's logging configuration (run as each server starts)
    replaces the handlers of its own loggers, which do not propagate."""
    handler = Tracebacks()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def server_settings(repo: ModelRepository, **config: Any) -> Settings:
    """A server on a free loopback port with room for the idle sockets, the memory broker,
    and ``config``."""
    config["server"] = {"port": free_port(), "max_connections": IDLE_SOCKETS + 100}
    return Settings(model_root=repo.root, log_level="warning", **config)


@pytest.fixture(scope="module")
def hook_server(voice_repo: ModelRepository) -> Iterator[Running]:  # noqa: F811
    audiohook = {
        "api_keys": {KEY: base64.b64encode(SECRET).decode(), PLAIN: ""},
        "idle_timeout_s": IDLE_S,
        "max_frame_bytes": MAX_FRAME,
        "max_sessions_per_key": IDLE_SOCKETS + 100,
        "close_drain_s": 0,
    }
    with serving_audiohook(server_settings(voice_repo, audiohook=audiohook)) as running:
        yield running


@pytest.fixture(scope="module")
def twilio_server(voice_repo: ModelRepository) -> Iterator[Served]:  # noqa: F811
    twilio = {"max_message_bytes": MAX_MESSAGE, "idle_timeout_s": IDLE_S, "drain_s": 0}
    with serving_twilio(server_settings(voice_repo, broker=PATIENT, twilio=twilio)) as served:
        yield served


@dataclass
class Bystander:
    """A healthy call on the same server, open before the fuzz and talking all along
    (never idle): whatever the others do must not touch it."""

    id: str
    talking: asyncio.Task[None]
    stack: contextlib.AsyncExitStack
    client: Client | Twilio

    def alive(self) -> str:
        """'' while it talks, else why not."""
        if not self.talking.done():
            return ""
        exc = None if self.talking.cancelled() else self.talking.exception()
        return f"the bystander stopped talking: {exc!r}"


async def hook_bystander(port: int) -> Bystander:
    stack = contextlib.AsyncExitStack()
    c = await stack.enter_async_context(audiohook_session(port, KEY, SECRET))
    await c.open()

    async def talk() -> None:
        while True:
            await c.audio(SILENCE_STEREO)
            await asyncio.sleep(0.1)

    return Bystander(c.id, asyncio.create_task(talk()), stack, c)


async def hook_bystander_answers(b: Bystander) -> str:
    """'' when it still talks and its ping gets a pong, else why not."""
    assert isinstance(b.client, Client)
    if why := b.alive():
        return why
    await b.client.send("ping", {})
    message = await b.client.recv()
    return "" if message["type"] == "pong" else f"the bystander got {message}"


async def twilio_bystander(served: Served) -> Bystander:
    stack = contextlib.AsyncExitStack()
    t = await stack.enter_async_context(twilio(served, stream=BYSTANDER_SID))
    await t.connected()
    await t.start(tracks=("inbound",))

    async def talk() -> None:
        ms = 0
        while True:
            await t.media("inbound", ms, SILENCE_ULAW)
            ms += 100
            await asyncio.sleep(0.1)

    return Bystander(BYSTANDER_SID, asyncio.create_task(talk()), stack, t)


async def end_bystander(b: Bystander) -> None:
    b.talking.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
        await b.talking
    with contextlib.suppress(ConnectionClosed):
        if isinstance(b.client, Client):
            await b.client.close()
        else:
            await b.client.stop()
    await b.stack.aclose()


@pytest.fixture(scope="module")
def hook_call(hook_server: Running, clients: Clients) -> Iterator[Bystander]:
    b = clients.run(hook_bystander(hook_server.port))
    assert settle(lambda: any("read_windows" in t for t in hook_server.task_names())), (
        "the bystander's call is read"
    )
    yield b
    clients.run(end_bystander(b))


@pytest.fixture(scope="module")
def twilio_call(twilio_server: Served, clients: Clients) -> Iterator[Bystander]:
    b = clients.run(twilio_bystander(twilio_server))
    assert settle(lambda: twilio_server.sessions.get(BYSTANDER_SID) is not None)
    yield b
    clients.run(end_bystander(b))


# -- the fuzz --------------------------------------------------------------------------------

#: What the fuzz found (each fixed since), tried first by every run: a regression shows
#: here as in the protocol suites.
OPEN = Message("open", open_parameters())
HOOK_FOUND = [
    # a duration read as infinite, then one that moves the position past a frame's pts
    Conversation(
        [OPEN, Message("discarded", {"start": "PT0S", "discarded": f"PT{'9' * 400}S"})],
        "close",
        False,
    ),
    Conversation(
        [OPEN, Message("resumed", {"start": "PT0S", "discarded": f"PT1{'0' * 20}S"}), Frame(320)],
        "close",
        False,
    ),
    # what the WebSocket layer refuses: text not UTF-8, a frame over its 1 MiB cap
    Conversation([OPEN, NotUtf8(b'{"type": "\xff"}')], "idle", False),
    Conversation([OPEN, Frame(WS_MAX_BYTES + 1)], "idle", False),
    # a refused upgrade (it logged an error)
    Conversation([], "hangup", False, "unknown-key"),
    # a lone surrogate kept in the call's ids (its summary could not be written)
    Conversation([OPEN, Message("update", {"language": "\udcff"})], "close", False),
]
TWILIO_START = Message("start", start_body(FUZZ_SID, ("inbound",)))
TWILIO_FOUND = [
    # a track that is a JSON object, tracks that are lists (unhashable: 1011)
    Conversation(
        [TWILIO_START, Message("media", {**media_body("inbound", 0, b"\xff"), "track": {}})],
        "close",
        False,
        "own",
    ),
    Conversation(
        [Message("start", {**start_body(FUZZ_SID), "tracks": [["inbound"]]})], "close", False, "own"
    ),
    Conversation([TWILIO_START, NotUtf8(b"\xff")], "idle", False, "own"),
    # a lone surrogate kept in the call's ids (its summary could not be written)
    Conversation(
        [Message("start", start_body(FUZZ_SID, ("inbound",), {"p": "\udcff"}))],
        "close",
        False,
        "own",
    ),
]


Example = Callable[[Conversation], None]


def found(conversations: list[Conversation]) -> Callable[[Example], Example]:
    """``conversations`` as Hypothesis' explicit examples."""

    def add(test: Example) -> Example:
        for conv in conversations:
            test = example(conv)(test)
        return test

    return add


@dataclass
class Under:
    """The server under test, as the fuzz and the idle sockets check it."""

    transport: str
    names: Callable[[], list[str]]  # the server loop's live tasks, by name
    others: Callable[[], str]  # '' when no session but the bystander's is open
    bystander: Callable[[], str]  # '' while it talks and its session is the one it opened


def hook_under(live: Running, bystander: Bystander) -> Under:
    def others() -> str:
        return "" if live.sessions() <= 1 else f"{live.sessions() - 1} sessions left"

    def intact() -> str:
        if live.state.sessions is None or not live.state.sessions.get(bystander.id):
            return "the bystander's session is gone"
        return bystander.alive()

    return Under("audiohook", live.task_names, others, intact)


def twilio_under(served: Served, bystander: Bystander) -> Under:
    session = served.sessions.get(BYSTANDER_SID)

    def others() -> str:
        left = set(served.sessions.sessions) - {BYSTANDER_SID}
        return f"sessions left: {sorted(left)}" if left else ""

    def intact() -> str:
        now = served.sessions.get(BYSTANDER_SID)
        if now is not session or now is None or now.closed.is_set():
            return "the bystander's session is gone or another"
        return bystander.alive()

    return Under("twilio", served.task_names, others, intact)


def fuzz(
    under: Under,
    clients: Clients,
    tracebacks: Tracebacks,
    conversations: st.SearchStrategy[Conversation],
    examples: int,
    first: list[Conversation],
    converse: Callable[[Conversation], Coroutine[Any, Any, Heard]],
    judge: Callable[[Conversation, Heard, dict[str, int]], None],
) -> None:
    """Each conversation on a fresh socket, then the server back at rest (its tasks, no
    session but the bystander's, which still talks; no error logged) and the judge's
    invariants; every distinct fault reported at the end (the run stops at once where
    the bystander is hurt, and after ``MAX_FAULTS``)."""
    name = under.transport
    faults, ends, reasons = Faults(SHRINK), Counter[str](), Counter[str]()

    @fuzz_settings(examples)
    @given(conversations)
    @found(first)
    def one(conv: Conversation) -> None:
        if faults.count.total() >= MAX_FAULTS:
            return  # each may have waited out its guards: report what there is
        ends[f"{'valid' if conv.valid else 'other'}, {conv.end}"] += 1
        before, names = counts(name), under.names()
        mark = len(tracebacks.records)
        with faults.collect():
            try:
                heard = clients.run(converse(conv))
            except TimeoutError:
                raise fault(f"{name} conversation hung", f"{conv}") from None
            # every task started meanwhile has ended (so has the connection's handler, and
            # with it whatever it counts): a task count could hide one behind a bystander's
            # task that ended meanwhile
            if not settle(lambda: not leaked(names, under.names())):
                extra = leaked(names, under.names())
                raise fault(f"{name} task left behind", f"{conv}\n  {heard}\n  tasks: {extra}")
            if why := under.bystander():  # every example after would fail the same way
                raise RuntimeError(f"{name}: {why}, after\n{conv}\n  {heard}")
            if not settle(lambda: not under.others()):
                raise fault(f"{name} session left", f"{under.others()}\n  {conv}\n  {heard}")
            if tb := tracebacks.since(mark):
                raise fault(f"{name} traceback {exception_name(tb)}", f"{tb}\n  {conv}")
            if heard.unreadable:
                raise fault(f"{name} session unreadable", f"{heard.unreadable}\n  {conv}")
            counted = counted_since(name, before)
            reasons.update(counted or {"nothing": 1})
            judge(conv, heard, counted)

    one()
    tried = ends.total()  # (what the fuzz reaches: shown with pytest -s)
    print(f"\n{name}: {tried} conversations; ends {dict(ends)}; counted {dict(reasons)}")
    faults.check(tried)


@pytest.mark.timeout(300)
def test_fuzz_audiohook_conversations(
    hook_server: Running, hook_call: Bystander, clients: Clients, tracebacks: Tracebacks
) -> None:
    """Whole AudioHook conversations, valid, mutated and junk, on one server; then its
    bystander call still answers a ping."""
    fuzz(
        hook_under(hook_server, hook_call),
        clients,
        tracebacks,
        hook_conversations(),
        AUDIOHOOK_EXAMPLES,
        HOOK_FOUND,
        lambda conv: hook_conversation(hook_server.port, conv, hook_call.id),
        hook_judge,
    )
    assert not (why := clients.run(hook_bystander_answers(hook_call))), why


@pytest.mark.timeout(300)
def test_fuzz_twilio_conversations(
    twilio_server: Served, twilio_call: Bystander, clients: Clients, tracebacks: Tracebacks
) -> None:
    """Whole Media Streams, valid, mutated and junk, on one server, its bystander stream
    untouched throughout."""

    def converse(conv: Conversation) -> Coroutine[Any, Any, Heard]:
        sid = BYSTANDER_SID if conv.upgrade == "bystander-sid" else FUZZ_SID
        return twilio_conversation(twilio_server, conv, sid)

    fuzz(
        twilio_under(twilio_server, twilio_call),
        clients,
        tracebacks,
        twilio_conversations(),
        TWILIO_EXAMPLES,
        TWILIO_FOUND,
        converse,
        twilio_judge,
    )


# -- 1,000 sockets opened and left idle ----------------------------------------------------


@dataclass
class Tally:
    """Sockets open at once, client side."""

    now: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)


async def silent(url: str, headers: dict[str, str], gate: asyncio.Semaphore, tally: Tally) -> Heard:
    """One socket that upgrades (at most ``CONNECTING`` upgrades at once), says nothing,
    and reads until the server closes it (a failure guard bounds the wait)."""
    heard = Heard()
    async with gate:
        ws = await connect(url, additional_headers=headers, open_timeout=IDLE_GUARD_S, proxy=None)
    tally.opened()
    try:
        async with asyncio.timeout(IDLE_GUARD_S):
            async for data in ws:
                heard.messages.append(json.loads(data))
    except (ConnectionClosed, TimeoutError, ValueError) as exc:
        heard.problems += [] if isinstance(exc, ConnectionClosed) else [repr(exc)]
    finally:
        tally.now -= 1
        received(ws, heard)
        await ws.close()
    return heard


@dataclass
class Silence:
    """How to open one endpoint's silent sockets, and what each must hear."""

    url: str
    headers: Callable[[], dict[str, str]]  # of one upgrade
    closed_as_idle: Callable[[Heard], bool]


@dataclass
class Round:
    """One batch of silent sockets: how many were open at once at most, how long until
    the last was closed, and this process's memory after it."""

    peak: int
    took_s: float
    rss_mb: float
    objects: int


def live_memory() -> tuple[float, int]:
    """This process's resident memory (clients and servers together) once freed memory
    is given back where the C library can (glibc's ``malloc_trim``), and the objects the
    garbage collector tracks: what is still in use, not the high-water mark."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb(), len(gc.get_objects())


def idle_round(clients: Clients, under: Under, e: Silence) -> Round:
    """``IDLE_SOCKETS`` silent sockets opened concurrently; each must be closed as idle
    and counted so, and the server come back to its tasks, open files and sessions."""
    names, files = under.names(), open_files()
    counted = counts(under.transport)

    async def all_of_them() -> tuple[list[Heard], int, float]:
        gate, tally, start = asyncio.Semaphore(CONNECTING), Tally(), time.monotonic()
        heard = await asyncio.gather(
            *(silent(e.url, e.headers(), gate, tally) for _ in range(IDLE_SOCKETS))
        )
        return list(heard), tally.peak, time.monotonic() - start

    # on a loop of their own: a thousand upgrades at once on the clients' loop can hold off
    # the bystander's next packet past the idle timeout, and the server rightly closes it
    heard, peak, took = apart(all_of_them(), IDLE_GUARD_S + 30)
    name = under.transport
    wrong = Counter(f"{h}" for h in heard if not e.closed_as_idle(h))
    assert not wrong, f"{name}: sockets not closed as idle: {dict(wrong)}"
    assert settle(lambda: counted_since(name, counted) == {"idle": IDLE_SOCKETS}, 30), (
        f"{name} counted {counted_since(name, counted)}"
    )
    assert settle(lambda: not leaked(names, under.names()), 30), (
        f"tasks left: {leaked(names, under.names())}"
    )
    assert settle(lambda: open_files() <= files, 30), f"open files: {open_files()}, {files} before"
    assert not (why := under.others() or under.bystander()), why
    return Round(peak, took, *live_memory())


def apart(coro: Coroutine[Any, Any, T], guard_s: float) -> T:
    """``coro`` run to its end on a new event loop in a thread of its own (``TimeoutError``
    after ``guard_s``), beside the clients' loop rather than on it."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="apart") as pool:
        return pool.submit(asyncio.run, coro).result(guard_s)


def idle_rounds(clients: Clients, under: Under, e: Silence) -> str:
    """Three rounds: the first reaches the high-water mark of buffers and allocator arenas
    for this many sockets; the later ones must not grow memory by ``RSS_BOUND_MB``, and one
    of them must keep fewer than an object per two sockets (a leak of one per socket shows
    as ``IDLE_SOCKETS`` in both; what fills once, such as a bounded log, in one only)."""
    rss, _ = live_memory()
    first = idle_round(clients, under, e)
    second = idle_round(clients, under, e)
    third = idle_round(clients, under, e)
    grown_mb = max(second.rss_mb, third.rss_mb) - first.rss_mb
    kept = min(second.objects - first.objects, third.objects - second.objects)
    name = under.transport
    assert grown_mb <= RSS_BOUND_MB, f"{name}: the second round grew RSS by {grown_mb:.0f} MB"
    assert kept < IDLE_SOCKETS // 2, f"{name}: the later rounds kept at least {kept} objects"
    return (
        f"{name}: {IDLE_SOCKETS} idle sockets three times, at most {first.peak}, "
        f"{second.peak} open at once, all closed in {first.took_s:.1f}, {second.took_s:.1f} s; "
        f"RSS {first.rss_mb - rss:+.0f} MB after the first, {grown_mb:+.0f} MB after the "
        f"second; {kept:+d} objects"
    )


@pytest.mark.timeout(300)
def test_idle_audiohook_sockets_are_closed_and_leave_nothing(
    hook_server: Running, hook_call: Bystander, clients: Clients, tracebacks: Tracebacks
) -> None:
    """``IDLE_SOCKETS`` upgraded with a valid key, then silent: each told ``disconnect``
    (reason error) after ``IDLE_S`` and closed (1008) after another, counted as ``idle``;
    the server back at rest and the bystander still answering."""
    live = hook_server

    def closed_as_idle(h: Heard) -> bool:
        if h.types() != ["disconnect"] or h.code != 1008 or h.problems:
            return False
        parameters = h.messages[0]["parameters"]
        return parameters["reason"] == "error" and "nothing was received" in parameters["info"]

    url = f"ws://127.0.0.1:{live.port}/v1/audiohook"
    silence = Silence(url, lambda: upgrade_headers(live.port, PLAIN), closed_as_idle)
    report = idle_rounds(clients, hook_under(live, hook_call), silence)
    print(f"\n{report}")
    assert not (why := clients.run(hook_bystander_answers(hook_call))), why
    assert not tracebacks.records, tracebacks.records[0]


@pytest.mark.timeout(300)
def test_idle_twilio_sockets_are_closed_and_leave_nothing(
    twilio_server: Served, twilio_call: Bystander, clients: Clients, tracebacks: Tracebacks
) -> None:
    """``IDLE_SOCKETS`` upgraded, then silent (no ``connected``, no ``start``): each closed
    with 1008 and a reason after ``IDLE_S``, counted as ``idle``; the server back at rest
    and the bystander's stream untouched."""

    def closed_as_idle(h: Heard) -> bool:
        return not h.messages and h.code == 1008 and "nothing received" in h.reason

    under = twilio_under(twilio_server, twilio_call)
    report = idle_rounds(clients, under, Silence(twilio_server.ws, dict, closed_as_idle))
    print(f"\n{report}")
    assert not tracebacks.records, tracebacks.records[0]
