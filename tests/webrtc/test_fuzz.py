"""Fuzz a real ``emostream serve`` over HTTP: every operation of its OpenAPI document, paths
and methods outside it, raw HTTP, and mutations of a real aiortc offer.

Runs inside the private network namespace (conftest.py): an offer that passes validation
reaches aiortc, which gathers candidates on every interface. One server (memory broker)
with API tokens set, so the same run checks that

- with a valid token nothing gets a 5xx, every 4xx is ``{error, detail}`` JSON and every 2xx
  matches the document (tests/fuzz_checks.py);
- without one (no header, wrong, non-ASCII, or ``?token=`` outside SSE) every operation
  that touches media or sessions answers 401 in that JSON;
- a session is not readable or deletable with another client's token;
- afterwards ``/healthz`` answers, no session is left and the log holds no traceback.

Bounded: fixed examples per operation (``EMOSTREAM_FUZZ_SCALE`` multiplies them for a
longer local run), fixed seed, no example database. Each operation is fuzzed on its own and
every distinct failure is reported, each with its shrunk example and the server's traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import re
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from emostream.bench.procs import Server, metric

from fuzz_checks import (
    SHRINK,
    Faults,
    Reply,
    Sent,
    ServerLog,
    check_error_body,
    check_reply,
    fault,
    fuzz_settings,
    last_exception,
    send,
)
from fuzz_inputs import (
    CONTENT_TYPES,
    HEADER_VALUES,
    JSON_VALUES,
    PATH_VALUES,
    QUERY_VALUES,
    deep_json,
    has_credentials,
    image_files,
    json_bytes,
    multipart_bodies,
    mutated_sdp,
    notable_bodies,
    sdp_bytes,
    sdp_lines,
)
from sdp_offers import BAD_OFFERS, CHROMIUM_OFFER

TOKENS = ("fuzz-token-a", "fuzz-token-b")
OWNER = TOKENS[0]  # creates the live sessions the fuzz aims at
OWNER_AUTH = f"Bearer {OWNER}".encode()
#: Paths that may stay open with tokens set (probes; /metrics has a setting of its own).
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}
EVENTS = "/v1/sessions/{session_id}/events"  # the one place ?token= is allowed (EventSource)
#: Examples per fuzzed operation (or endpoint), sized for about a minute on 2 cores.
WITH_TOKEN, WITHOUT_TOKEN, OUTSIDE, RAW, SDP, SDP_CHROMIUM = 120, 40, 100, 60, 200, 80


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(netns_ip: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("fuzz")
    s = Server(netns_ip, logs, EMOSTREAM_API_TOKENS=",".join(TOKENS))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def doc(server: Server, http: httpx.Client) -> dict[str, Any]:
    r = http.get(f"{server.url}/openapi.json", headers=_auth(OWNER))
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def offer() -> str:
    """A real offer: aiortc with a video and an audio transceiver and the `emotions` channel."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("video", direction="sendonly")
            pc.addTransceiver("audio", direction="sendonly")
            pc.createDataChannel("emotions")
            await pc.setLocalDescription(await pc.createOffer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    return asyncio.run(make())


@pytest.fixture(scope="module")
def log(server: Server) -> ServerLog:
    return ServerLog(server.log_path)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- running many operations, reporting every distinct failure ----------------------------


def describe(exc: BaseException) -> str:
    """An exception (or Hypothesis' group of distinct ones) with their falsifying examples."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n\n".join(describe(e) for e in exc.exceptions)
    return "".join(traceback.format_exception_only(exc)).strip()


def run_all(cases: list[tuple[str, Callable[[], None]]]) -> None:
    failures = []
    for name, case in cases:
        try:
            case()
        except Exception as exc:
            failures.append(f"=== {name}\n{describe(exc)}")
    if failures:
        pytest.fail(f"{len(failures)} of {len(cases)} fuzzed\n\n" + "\n\n".join(failures), False)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, methods in doc["paths"].items()
        for method, op in methods.items()
    ]


class Sessions:
    """Live sessions (created by ``OWNER``) for the fuzz to aim at, and clean-up of any
    session a fuzzed request happened to create."""

    def __init__(self, server: Server, http: httpx.Client, offer: str) -> None:
        self.server, self.http, self.offer = server, http, offer
        self.live: list[str] = []
        self.secrets: dict[str, str] = {}  # session id -> its own session_token, if any

    def ensure(self) -> None:
        if not self.live:
            r = self.http.post(
                f"{self.server.url}/v1/offer",
                json={"sdp": self.offer, "type": "offer"},
                headers=_auth(OWNER),
            )
            assert r.status_code == 200, r.text
            answer = r.json()
            self.live.append(answer["session_id"])
            if isinstance(answer.get("session_token"), str):
                self.secrets[answer["session_id"]] = answer["session_token"]

    def owners(self) -> set[str]:
        """Tokens that may use the live sessions: OWNER, and their session tokens."""
        return {OWNER} | {self.secrets[s] for s in self.live if s in self.secrets}

    def forget_ended(self, method: str, url: str, reply: Reply) -> None:
        if method == "DELETE" and reply.status == 200:
            self.live = [s for s in self.live if not url.split("?")[0].endswith("/" + quote(s))]

    def end_created(self, method: str, reply: Reply, token: str | None) -> None:
        """DELETE, with the token that made it, a session that a fuzzed POST created (a 2xx
        with an id or a Location)."""
        if method != "POST" or not 200 <= reply.status < 300:
            return
        location = reply.headers.get("location")
        sid = None
        if reply.headers.get("content-type", "").startswith("application/json"):
            body = reply.json()
            sid = body.get("session_id") if isinstance(body, dict) else None
        if location:
            url = httpx.URL(self.server.url).join(location)
        elif isinstance(sid, str):
            url = httpx.URL(f"{self.server.url}/v1/sessions/{quote(sid, safe='')}")
        else:
            return
        r = self.http.delete(url, headers=_auth(token or OWNER))
        if r.status_code != 200:
            raise fault("DELETE of a created session failed", f"{url}: {r.status_code} {r.text}")

    def close(self) -> None:
        for sid in self.live:
            self.http.delete(f"{self.server.url}/v1/sessions/{sid}", headers=_auth(OWNER))
        self.live = []


@pytest.fixture(scope="module")
def sessions(server: Server, http: httpx.Client, offer: str) -> Iterator[Sessions]:
    s = Sessions(server, http, offer)
    yield s
    s.close()


# -- requests built from the document -----------------------------------------------------

#: Authorization values that are not a valid token (none at all included).
WRONG_AUTH: st.SearchStrategy[bytes | None] = st.one_of(
    st.none(),
    st.sampled_from(
        [
            b"",
            b"Bearer",
            b"Bearer ",
            b"Bearer wrong",
            b"Basic ZnV6ejp4",
            b"Token fuzz-token-a",
            b"fuzz-token-a",
            b"Bearer fuzz-token-a fuzz-token-b",
            b"Bearer fuzz-token-ab",
            b"Bearer \xc3\xa9",  # issue 12, item 7: UTF-8 e-acute
            b"Bearer \xe9",  # the same, latin-1
            b"Bearer fuzz-token-\xc3\xa9",
        ]
    ),
    HEADER_VALUES.map(lambda v: b"Bearer " + v),
)
WRONG_QUERY_TOKENS = st.sampled_from(["", "wrong", "é", "fuzz-token-a\x00", "fuzz-token-"])


Body = tuple[str | None, bytes | None]


def bodies(offer: str) -> st.SearchStrategy[Body]:
    """``(natural content type, body)``: nothing, JSON of all kinds (offers, deep, huge),
    random bytes, real and damaged images, multipart, SDP."""
    offer_json = st.fixed_dictionaries(
        {
            "sdp": st.one_of(st.just(offer), mutated_sdp(offer), st.text(max_size=20), JSON_VALUES),
            "type": st.one_of(st.sampled_from(["offer", "answer", "", "OFFER"]), JSON_VALUES),
        },
        optional={"x": JSON_VALUES},
    ).map(json_bytes)

    def as_json(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[Body]:
        return st.tuples(st.just("application/json"), values)

    return st.one_of(  # one branch per kind, so each is about as likely
        st.just((None, None)),
        as_json(JSON_VALUES.map(json_bytes)),
        as_json(offer_json),
        as_json(
            st.builds(
                deep_json,
                st.sampled_from([2, 100, 1000, 3000, 30_000]),
                st.sampled_from(["list", "object", "offer"]),
            )
        ),
        as_json(st.integers(60_000, 120_000).map(lambda n: json_bytes({"sdp": "v=0\n" + "a" * n}))),
        as_json(st.binary(max_size=64).map(lambda b: b'{"sdp": "' + b + b'"')),
        st.tuples(st.just("application/octet-stream"), st.binary(max_size=2048)),
        image_files(),
        multipart_bodies(),
        st.tuples(
            st.just("application/sdp"),
            st.one_of(st.just(offer), mutated_sdp(offer)).map(sdp_bytes),
        ),
    )


@dataclass
class Built:
    sent: Sent
    uses_live: bool  # names a live session (of OWNER's)
    query_token: bool  # carries a valid ?token= outside SSE, and no valid header


def build(
    data: st.DataObject,
    url: str,
    method: str,
    path: str,
    op: dict[str, Any],
    offer: str,
    *,
    live: list[str],
    token: str | None,
) -> Built:
    """A request for one operation.

    ``token``: the valid token to send, or None for an unauthenticated request (wrong or
    missing credentials; its path parameters then always match the route, so the answer
    must be the 401 of that route, never a routing 404).
    """
    uses_live = query_token = False

    def param(match: re.Match[str]) -> str:
        nonlocal uses_live
        if live and data.draw(st.integers(0, 2)) == 0:
            uses_live = True
            return quote(data.draw(st.sampled_from(live)), safe="")
        value = data.draw(PATH_VALUES, label=match.group(1))
        if token is None:  # stay on this route: no '/', no dot segments, not empty
            value = value.replace("/", "_").strip(".") or "x"
        return quote(value, safe="" if token is None or data.draw(st.booleans()) else "/")

    target = re.sub(r"\{(\w+)\}", param, path)
    query: list[tuple[str, str]] = []
    for p in op.get("parameters", []):
        if p.get("in") == "query" and data.draw(st.booleans()):
            query.append((p["name"], data.draw(QUERY_VALUES, label=p["name"])))
    if data.draw(st.booleans()):
        query.append((data.draw(st.sampled_from(["x", "detect", "sdp", "é"])), "1"))
    headers: dict[str, bytes] = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}".encode()
    else:
        auth = data.draw(WRONG_AUTH, label="authorization")
        if auth is not None:
            headers["Authorization"] = auth
        choices = [WRONG_QUERY_TOKENS] + ([] if path == EVENTS else [st.sampled_from(TOKENS)])
        if data.draw(st.booleans()):  # ?token= is for SSE only
            value = data.draw(st.one_of(*choices), label="?token")
            query_token = value in TOKENS
            query.append(("token", value))
    ctype, body = data.draw(bodies(offer), label="body")
    header_ctype = data.draw(
        st.one_of(
            st.just(ctype.encode() if ctype else None),
            st.sampled_from(CONTENT_TYPES).map(str.encode),
            HEADER_VALUES,
            st.none(),
        ),
        label="content-type",
    )
    if header_ctype is not None:
        headers["Content-Type"] = header_ctype
    if data.draw(st.integers(0, 3)) == 0:
        name = data.draw(
            st.sampled_from(["Accept", "Origin", "X-Forwarded-For", "Range", "Cookie"])
        )
        headers[name] = data.draw(HEADER_VALUES, label=name)
    full = url + target + ("?" + urlencode(query, quote_via=quote) if query else "")
    # HTTP/1.1 field values carry no leading or trailing whitespace (h11 refuses to send it)
    headers = {name: value.strip(b" \t") for name, value in headers.items()}
    return Built(Sent(method, full, headers, body), uses_live, query_token)


def exchange(http: httpx.Client, kind: str, sent: Sent, server: Server, log: ServerLog) -> Reply:
    log.mark()
    try:
        reply = send(http, sent)
    except httpx.HTTPError as exc:
        tb = log.traceback(wait_s=0.5)
        raise fault(f"{kind} no answer {type(exc).__name__}", f"{exc}\n{tb}\n{sent}") from None
    if server.proc.poll() is not None:  # fatal: stop fuzzing
        raise RuntimeError(f"the server exited after\n{sent}\n{server.log()}")
    return reply


def fuzz_operation(
    server: Server,
    http: httpx.Client,
    doc: dict[str, Any],
    log: ServerLog,
    sessions: Sessions,
    offer: str,
    method: str,
    path: str,
    op: dict[str, Any],
    *,
    authenticated: bool,
    examples: int,
) -> None:
    kind = f"{method} {path}" + ("" if authenticated else " unauthenticated")
    guarded = path not in OPEN_PATHS
    faults = Faults(SHRINK)

    def attempt(built: Built, token: str | None) -> None:
        with faults.collect():
            reply = exchange(http, kind, built.sent, server, log)
            try:
                judge(reply, built, token)
            finally:
                sessions.forget_ended(method, built.sent.url, reply)
                sessions.end_created(method, reply, token)

    @fuzz_settings(examples)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        sessions.ensure()
        choices = sorted({*TOKENS, *sessions.owners()})  # API tokens and the session's own
        token = data.draw(st.sampled_from(choices), label="token") if authenticated else None
        attempt(
            build(data, server.url, method, path, op, offer, live=sessions.live, token=token), token
        )

    def judge(reply: Reply, built: Built, token: str | None) -> None:
        sent = built.sent
        if reply.status >= 500:
            check_reply(kind, sent, reply, op, doc, log)  # raises, naming the exception
        if not authenticated and guarded and reply.status != 401:
            why = "accepted ?token= outside SSE" if built.query_token else "not 401"
            raise fault(f"{kind} answered {reply.status}: {why}", f"{sent}")
        if not authenticated and guarded:
            check_error_body(kind, sent, reply)
            return
        allowed = (401, 403, 404, 405) if method == "PATCH" else (401, 403, 404)
        if built.uses_live and token not in sessions.owners() and reply.status not in allowed:
            raise fault(
                f"{kind} with another client's token answered {reply.status}",
                f"the session belongs to {OWNER!r}\n{sent}",
            )
        check_reply(kind, sent, reply, op, doc, log)

    # First the notable bodies, each once (the random draws need not meet them all), on a
    # live session where the path names one.
    notable = notable_bodies(offer)
    for ctype, body in notable:
        sessions.ensure()
        headers = {} if ctype is None else {"Content-Type": ctype.encode()}
        if authenticated:
            headers["Authorization"] = OWNER_AUTH
        target = re.sub(r"\{\w+\}", sessions.live[0], path)
        sent = Sent(method, server.url + target, headers, body)
        attempt(Built(sent, uses_live=False, query_token=False), OWNER if authenticated else None)
    one()
    faults.check(len(notable) + examples)


# -- the tests ----------------------------------------------------------------------------


def test_the_document_lists_the_api(doc: dict[str, Any]) -> None:
    """The fuzz is driven by the document, so it must not silently cover nothing."""
    found = {f"{m} {p}" for m, p, _ in operations(doc)}
    for needed in (
        "POST /v1/offer",
        "POST /whip",
        "POST /v1/predict",
        "GET /v1/sessions/{session_id}",
        "DELETE /v1/sessions/{session_id}",
        f"GET {EVENTS}",
        "DELETE /whip/{session_id}",
        "GET /healthz",
    ):
        assert needed in found, sorted(found)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("authenticated", [True, False], ids=["valid-token", "no-valid-token"])
def test_every_operation(
    server: Server,
    http: httpx.Client,
    doc: dict[str, Any],
    log: ServerLog,
    sessions: Sessions,
    offer: str,
    authenticated: bool,
) -> None:
    """Every documented operation, with one of our tokens and (all 401s) without one."""
    examples = WITH_TOKEN if authenticated else WITHOUT_TOKEN
    run_all(
        [
            (
                f"{m} {p}",
                lambda m=m, p=p, op=op: fuzz_operation(
                    server,
                    http,
                    doc,
                    log,
                    sessions,
                    offer,
                    m,
                    p,
                    op,
                    authenticated=authenticated,
                    examples=examples,
                ),
            )
            for m, p, op in operations(doc)
        ]
    )


UNDOCUMENTED_PATHS = [
    "/nope",
    "/v1",
    "/v1/",
    "/v1/sessions",
    "/v2/offer",
    "/v1/predict/x",
    "/whip/a/b",
    "/static/nope.js",
    "/%00",
    "/%C3%A9",
    "/" + "a" * 3000,
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@pytest.mark.timeout(300)
def test_paths_and_methods_outside_the_document(
    server: Server, http: httpx.Client, doc: dict[str, Any], log: ServerLog
) -> None:
    """Wrong methods on documented paths and unknown paths: 404/405 in ``{error, detail}``."""
    faults = Faults(SHRINK)
    tried = 0
    for path, methods in doc["paths"].items():
        target = re.sub(r"\{\w+\}", "nope", path)
        for method in METHODS:
            if method.lower() not in methods:
                tried += 1
                with faults.collect():
                    sent = Sent(method, server.url + target, {})
                    _undocumented(http, "wrong method", sent, server, log)
    routes = [re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p)) for p in doc["paths"]]

    @fuzz_settings(OUTSIDE)
    @given(
        st.sampled_from(METHODS),
        st.one_of(
            st.sampled_from(UNDOCUMENTED_PATHS),
            st.text(st.characters(blacklist_categories=["Cs"]), max_size=30).map(
                lambda t: "/" + quote(t, safe="/")
            ),
        ),
    )
    def unknown(method: str, path: str) -> None:
        if path in UNFUZZED_ROUTES or any(re.fullmatch(route, path) for route in routes):
            return  # a real route (the document fuzz covers those in it)
        if path.startswith("/static/") and path != "/static/nope.js":
            return  # the demo page's files
        with faults.collect():
            _undocumented(http, "unknown path", Sent(method, server.url + path, {}), server, log)

    unknown()
    faults.check(tried + OUTSIDE)


UNFUZZED_ROUTES = {"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _undocumented(
    http: httpx.Client, kind: str, sent: Sent, server: Server, log: ServerLog
) -> None:
    sent.headers["Authorization"] = OWNER_AUTH
    reply = exchange(http, kind, sent, server, log)
    check_reply(kind, sent, reply, None, {}, log)


# -- raw HTTP: what the HTTP server itself answers ----------------------------------------

GOOD_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\n\r\n"
RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: fuzz\r\n\r\n",
    b"GET /heal thz HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /healthz\x00 HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"POST /v1/offer HTTP/1.1\r\nHost: fuzz\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/offer HTTP/1.1\r\nHost: fuzz\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/offer HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /v1/offer HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\n folded: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
]


def raw_exchange(host: str, port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes; what came back until the server closed, went quiet, or a full
    response (headers plus Content-Length bytes) arrived."""
    out = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        with contextlib.suppress(OSError):  # it may answer and close before reading all
            s.sendall(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break
    return out


@pytest.mark.timeout(300)
def test_raw_http_errors_are_json(server: Server, log: ServerLog) -> None:
    """The HTTP server's own 400s (unparseable requests) are ``{error, detail}`` too."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    faults = Faults(SHRINK)

    @fuzz_settings(RAW)
    @given(
        st.one_of(
            st.sampled_from(RAW_REQUESTS),
            st.binary(min_size=1, max_size=200).map(lambda b: b + b"\r\n\r\n"),
            st.tuples(st.integers(0, len(GOOD_REQUEST) - 5), st.binary(min_size=1, max_size=3)).map(
                lambda t: GOOD_REQUEST[: t[0]] + t[1] + GOOD_REQUEST[t[0] + len(t[1]) :]
            ),
        )
    )
    def one(request: bytes) -> None:
        log.mark()
        answer = raw_exchange(host, int(port), request)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
        if not m:
            return  # closed without an answer: nothing to check here
        status = int(m.group(1))
        head, _, body = answer.partition(b"\r\n\r\n")
        ctype = re.search(rb"(?im)^content-type:\s*([^\r\n]*)", head)
        headers = httpx.Headers({"content-type": ctype.group(1).decode() if ctype else ""})
        with faults.collect():
            sent = Sent("RAW", f"{request[:200]!r}")
            check_reply("raw HTTP", sent, Reply(status, headers, body), None, {}, log)
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited after {request[:200]!r}\n{server.log()}")

    one()
    faults.check(RAW)


# -- SDP mutations of a real offer --------------------------------------------------------


def sdp_diff(base: str, sdp: str) -> str:
    """The lines a mutated offer lost and gained (at most 12), and how it ends."""
    changed = [
        ln
        for ln in difflib.unified_diff(sdp_lines(base), sdp_lines(sdp), lineterm="", n=0)
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]
    shown = "\n    ".join(repr(ln)[:120] for ln in changed[:12])
    more = f"\n    ... {len(changed) - 12} more" if len(changed) > 12 else ""
    return f"offer diff:\n    {shown}{more}\n  ends with {sdp[-40:]!r} ({len(sdp)} chars)"


def fuzz_sdp(
    server: Server,
    http: httpx.Client,
    doc: dict[str, Any],
    log: ServerLog,
    sessions: Sessions,
    base: str,
    path: str,
    *,
    examples: int,
    explicit: bool,
) -> None:
    """Mutations of ``base`` to ``path``; with ``explicit``, issue 12's bad offers first."""
    op = doc["paths"][path]["post"]
    kind = f"POST {path} (SDP)"
    faults = Faults(SHRINK)

    def one(sdp: str) -> None:
        if path == "/whip":
            headers = {"Authorization": OWNER_AUTH, "Content-Type": b"application/sdp"}
            sent = Sent("POST", server.url + path, headers, sdp_bytes(sdp))
        else:
            headers = {"Authorization": OWNER_AUTH, "Content-Type": b"application/json"}
            sent = Sent(
                "POST", server.url + path, headers, json_bytes({"sdp": sdp, "type": "offer"})
            )
        sent.note = sdp_diff(base, sdp)
        with faults.collect():
            reply = exchange(http, kind, sent, server, log)
            try:
                if 200 <= reply.status < 300 and not has_credentials(sdp):
                    raise fault(
                        f"{kind} accepted an offer without DTLS fingerprint or ICE", f"{sent}"
                    )
                check_reply(kind, sent, reply, op, doc, log)
            finally:
                sessions.end_created("POST", reply, OWNER)

    test = given(mutated_sdp(base))(one)
    known = [bad for bad, _ in BAD_OFFERS.values()] if explicit else []
    for bad in known:
        test = example(bad)(test)
    fuzz_settings(examples)(test)()
    faults.check(examples + len(known))


@pytest.mark.timeout(400)
def test_mutated_offers(
    server: Server,
    http: httpx.Client,
    doc: dict[str, Any],
    log: ServerLog,
    sessions: Sessions,
    offer: str,
) -> None:
    sessions.close()  # the SDP fuzz needs no live session; free its slot
    bases = [
        ("a fresh aiortc offer", offer, SDP, True),
        ("Chromium's", CHROMIUM_OFFER, SDP_CHROMIUM, False),
    ]
    run_all(
        [
            (
                f"{name} to {p}",
                lambda p=p, base=base, n=n, known=known: fuzz_sdp(
                    server, http, doc, log, sessions, base, p, examples=n, explicit=known
                ),
            )
            for p in ("/v1/offer", "/whip")
            for name, base, n, known in bases
        ]
    )


# -- afterwards ---------------------------------------------------------------------------


def test_server_is_healthy_and_clean_after_fuzzing(
    server: Server, http: httpx.Client, sessions: Sessions
) -> None:
    """Runs last in this module: the process answers, no session is left, no traceback."""
    sessions.close()
    assert server.proc.poll() is None, server.log()
    r = http.get(f"{server.url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    active = None
    deadline = time.monotonic() + 30  # a failure guard: sessions end at once on DELETE
    while time.monotonic() < deadline:
        text = http.get(f"{server.url}/metrics", headers=_auth(OWNER)).text
        assert "emostream_active_sessions" in text, text[:500]
        active = metric(text, "emostream_active_sessions")
        if active == 0:
            break
        time.sleep(0.25)
    assert active == 0, f"{active} sessions still active after the fuzz"
    text = Path(server.log_path).read_text(errors="replace")
    found = sorted({ln for ln in _exception_lines(text)})
    assert not found, f"the server logged {len(found)} distinct exceptions:\n" + "\n".join(found)


def _exception_lines(log_text: str) -> list[str]:
    blocks = log_text.split("Traceback (most recent call last):")[1:]
    return [last_exception("Traceback (most recent call last):" + b) for b in blocks]
