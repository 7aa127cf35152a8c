"""What every fuzzed response must satisfy, and how a failure is named.

- never a 5xx;
- every 4xx is JSON with exactly the string fields ``error`` and ``detail`` (ErrorBody);
- a 2xx is a status the OpenAPI document lists for that operation, with a documented
  content type, and a JSON body that validates against the documented schema.

Each failure is a :class:`Fault` named after what went wrong (``POST /v1/offer 500
RecursionError``), with the request and the server's traceback line (read from its log).
:class:`Faults` keeps the first example of each distinct kind and lets the fuzz run on, so
one run lists every defect it meets, not just the first, in a bounded time (no shrinking).
With ``shrink`` it re-raises instead, and Hypothesis shrinks the first failure (and tells
distinct ones apart by their exception types: one per kind).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, settings

#: ``EMOSTREAM_FUZZ_SCALE`` multiplies every fuzz test's examples (a longer local run).
SCALE = float(os.environ.get("EMOSTREAM_FUZZ_SCALE", "1"))
#: Shrinking a failure can take minutes of requests (Hypothesis allows itself 5 per test),
#: so CI reports the first example of each distinct fault (:class:`Faults`) and fuzzes on;
#: set this to stop at the first fault and shrink it instead (locally).
SHRINK = os.environ.get("EMOSTREAM_FUZZ_SHRINK", "") not in ("", "0")
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if SHRINK else [])


def fuzz_settings(examples: int) -> settings:
    """``examples`` (times ``SCALE``), a fixed seed, no example database: every run tries
    the same inputs."""
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        phases=PHASES,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


class Fault(AssertionError):
    """A response that breaks the API's contract."""


_KINDS: dict[str, type[Fault]] = {}


def fault(kind: str, message: str) -> Fault:
    """A :class:`Fault` of the type named ``kind`` (one type per kind, so Hypothesis keeps
    distinct defects apart)."""
    cls = _KINDS.get(kind)
    if cls is None:
        cls = _KINDS[kind] = type(kind, (Fault,), {})
    return cls(f"{kind}\n{message}")


class Faults:
    """The distinct faults of a fuzz run: the first message of each kind, and counts."""

    def __init__(self, shrink: bool = False) -> None:
        self.shrink = shrink
        self.first: dict[str, str] = {}
        self.count: Counter[str] = Counter()

    @contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except Fault as exc:
            if self.shrink:
                raise
            kind = type(exc).__name__
            self.first.setdefault(kind, str(exc))
            self.count[kind] += 1

    def check(self, examples: int) -> None:
        """Fail with every kind found (each with its first example) after ``examples``."""
        if self.first:
            report = [f"[{self.count[k]}x] {msg}" for k, msg in self.first.items()]
            raise AssertionError(
                f"{len(self.first)} distinct faults in {examples} examples:\n\n"
                + "\n\n".join(report)
            )


@dataclass
class ServerLog:
    """The part of a server's log written since the last :meth:`mark`."""

    path: Path
    offset: int = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.is_file() else 0

    def since_mark(self) -> str:
        if not self.path.is_file():
            return ""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace")

    def traceback(self, wait_s: float = 2.0) -> str:
        """The last exception the server logged since the mark: ``Name: message at
        file:line in function`` ('' if none). Uvicorn logs it after sending the 500, so this
        waits up to ``wait_s`` (a failure guard) for it to appear."""
        deadline = time.monotonic() + wait_s
        while True:
            found = last_exception(self.since_mark())
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def last_exception(log: str) -> str:
    """``ExcName: message at path:line in func`` of the last traceback in ``log``: its
    innermost frame, and the first unindented line after it."""
    blocks = log.split("Traceback (most recent call last):")
    if len(blocks) < 2:
        return ""
    lines = blocks[-1].splitlines()
    frames = [i for i, ln in enumerate(lines) if re.match(r'\s+File "(.+)", line \d+, in ', ln)]
    if not frames:
        return ""
    m = re.match(r'\s+File "(.+)", line (\d+), in (\S+)', lines[frames[-1]])
    assert m is not None
    path, line, func = m.groups()
    after = lines[frames[-1] + 1 :]
    exc = next((ln for ln in after if ln and not ln[0].isspace()), "?")
    return f"{exc[:160]} at {'/'.join(Path(path).parts[-2:])}:{line} in {func}"


def exception_name(traceback: str) -> str:
    """``KeyError`` of ``builtins.KeyError: 'x' at ...``."""
    m = re.match(r"[\w.]+", traceback)
    return m.group(0).rsplit(".", 1)[-1] if m else "no-traceback"


@dataclass
class Sent:
    """A request as the fuzz built it, for failure messages."""

    method: str
    url: str
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes | None = None
    note: str = ""  # e.g. how a mutated offer differs from the real one

    def __str__(self) -> str:
        body = "" if self.body is None else f"\n  body ({len(self.body)} B): {self.body[:300]!r}"
        note = f"\n  {self.note}" if self.note else ""
        return f"  {self.method} {self.url[:300]}\n  headers: {self.headers}{body}{note}"


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(client: httpx.Client, sent: Sent) -> Reply:
    """Send ``sent``; an event stream is read only up to its first chunk, then closed."""
    request = client.build_request(
        sent.method,
        sent.url,
        headers=[(name.encode(), value) for name, value in sent.headers.items()],
        content=sent.body,
    )
    response = client.send(request, stream=True)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            body = next(response.iter_raw(), b"")
        else:
            body = response.read()
    finally:
        response.close()
    return Reply(response.status_code, response.headers, body)


def check_error_body(kind: str, sent: Sent, reply: Reply) -> None:
    """A 4xx must be ``{"error": str, "detail": str}`` JSON (HEAD has no body)."""
    if sent.method == "HEAD":
        return
    problem = error_body_problem(reply.headers.get("content-type", ""), reply.body)
    if problem:
        raise fault(
            f"{kind} {reply.status} not {{error, detail}}",
            f"{problem}\n{sent}\n  answer: {reply.body[:300]!r}",
        )


def error_body_problem(content_type: str, body: bytes) -> str:
    """Why a 4xx body is not ``{error, detail}`` JSON ('' when it is)."""
    if not content_type.startswith("application/json"):
        return f"content type {content_type!r}, not application/json"
    try:
        data = json.loads(body)
    except ValueError:
        return "body is not JSON"
    if not isinstance(data, dict) or set(data) != {"error", "detail"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        return f"body has {keys}, not exactly error and detail"
    if not all(isinstance(data[k], str) and data[k] for k in ("error", "detail")):
        return "error and detail must be non-empty strings"
    return ""


def check_reply(
    kind: str, sent: Sent, reply: Reply, operation: dict | None, doc: dict, log: ServerLog
) -> None:
    """The contract for one response; ``operation`` is its OpenAPI operation (or None)."""
    if reply.status >= 500:
        tb = log.traceback()
        raise fault(
            f"{kind} {reply.status} {exception_name(tb)}",
            f"server traceback: {tb or '(none logged)'}\n{sent}\n  answer: {reply.body[:300]!r}",
        )
    if reply.status >= 400:
        check_error_body(kind, sent, reply)
        return
    if operation is None or reply.status >= 300:
        return
    documented = operation.get("responses", {}).get(str(reply.status))
    if documented is None:
        raise fault(f"{kind} {reply.status} undocumented", f"{sent}")
    content = documented.get("content") or {}
    ctype = reply.headers.get("content-type", "").split(";")[0].strip()
    if content and ctype not in content:
        raise fault(
            f"{kind} {reply.status} {ctype} undocumented",
            f"documented content types {sorted(content)}, got {ctype!r}\n{sent}",
        )
    schema = content.get(ctype, {}).get("schema")
    if schema and ctype == "application/json":
        errors = validate(reply.json(), schema, doc)
        if errors:
            raise fault(f"{kind} {reply.status} off-schema", f"{errors[:5]}\n{sent}")


def validate(value: Any, schema: dict, doc: dict, where: str = "$") -> list[str]:
    """Errors of ``value`` against the OpenAPI (JSON Schema) subset FastAPI writes."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return validate(value, doc["components"]["schemas"][name], doc, where)
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        if any(not validate(value, s, doc, where) for s in options):
            return []
        return [f"{where}: {value!r:.60} matches none of {len(options)} options"]
    errors = [e for s in schema.get("allOf", []) for e in validate(value, s, doc, where)]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r:.60} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r:.60} not in {schema['enum']}")
    kind = schema.get("type")
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if kind is not None:
        ok = isinstance(value, types[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            return [*errors, f"{where}: {value!r:.60} is not {kind}"]
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: missing {name!r}")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += validate(value[name], sub, doc, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], doc, f"{where}[{i}]")
    return errors
