"""A session's requests reach the child process that holds it (``emostream/local/routing.py``).

Two real children (uvicorn, ``emostream serve``'s own configuration, the real app without
models) on one event loop in a thread, each listening on TCP loopback (the public side)
and on its own Unix socket (the private one), each behind ``SessionRouter``. The directory
is a dict per child, so a test can make two children disagree. Sessions are opened in a
child's own ``SessionManager``; every request goes to child 0 over TCP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import Request
from prometheus_client import REGISTRY

from emostream.broker.memory import MemoryBroker
from emostream.local.routing import SessionRouter, held_by, session_paths
from emostream.settings import Settings
from emostream.stream.app import AppState, create_app
from emostream.stream.server import uvicorn_config
from emostream.stream.server_config import LimitsConfig
from emostream.stream.session import Session
from emostream.stream.session_manager import SessionManager

T = TypeVar("T")
GUARD_S = 30.0  # the longest a step may take before the test fails (a hang guard)
LIMIT = 4096  # the body limit each child relays (limits.max_sdp_bytes here)


@dataclass
class Child:
    index: int
    state: AppState
    url: str  # public: TCP loopback
    directory: dict[str, int] = field(default_factory=dict)  # this child's view of owners

    @property
    def sessions(self) -> SessionManager:
        assert self.state.sessions is not None
        return self.state.sessions


class Children:
    """The children, their event loop and where their private sockets are."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[tuple[uvicorn.Server, Future[None]]] = []
        self.children = [self._start(i) for i in range(2)]

    def socket_path(self, index: int) -> str:
        return str(self.root / f"{index}.sock")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(GUARD_S)

    def _start(self, index: int) -> Child:
        settings = Settings(limits=LimitsConfig(max_sdp_bytes=LIMIT))
        state = AppState(settings)
        state.load_error = "no models in this test"  # the app serves sessions, not models
        state.sessions = SessionManager(MemoryBroker(settings.broker), settings.session)
        app = create_app(settings, state)

        @app.post("/v1/sessions/{session_id}/echo")
        async def echo(session_id: str, request: Request, q: str = "") -> dict[str, object]:
            """What reached this child, and that it was this one."""
            return {
                "child": index,
                "body": (await request.body()).decode(),
                "q": q,
                "authorization": request.headers.get("authorization"),
                "routed": request.headers.get("x-emostream-routed"),
            }

        # IPPROTO_TCP, not 0 (socket.create_server's): asyncio sets TCP_NODELAY only on
        # such sockets' connections; without it every answer waited 40 ms for an ACK
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        tcp.bind(("127.0.0.1", 0))
        private = socket.socket(socket.AF_UNIX)
        private.bind(self.socket_path(index))
        child = Child(index, state, f"http://127.0.0.1:{tcp.getsockname()[1]}")

        async def owner(session_id: str) -> int | None:
            return child.directory.get(session_id)

        router = SessionRouter(
            app,
            me=index,
            owner=owner,
            held=held_by(lambda: state.sessions),
            socket_path=self.socket_path,
            max_body_bytes=settings.limits.max_sdp_bytes,
        )
        server = uvicorn.Server(uvicorn_config(router, settings))
        serving = asyncio.run_coroutine_threadsafe(server.serve([tcp, private]), self.loop)
        self.servers.append((server, serving))
        wait_for(lambda: server.started, "the child did not start")
        return child

    def open(self, index: int) -> Session:
        """A session held by child ``index``, known to every child's directory."""
        session = self.run(self.children[index].sessions.open())
        for child in self.children:
            child.directory[session.id] = index
        return session

    def close(self) -> None:
        for server, _ in self.servers:
            server.should_exit = True
        for _, serving in self.servers:
            serving.result(GUARD_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(GUARD_S)


def wait_for(done: Any, what: str) -> None:
    """Poll ``done()`` until true; fails after ``GUARD_S``."""
    event = threading.Event()
    for _ in range(int(GUARD_S / 0.02)):
        if done():
            return
        event.wait(0.02)
    raise AssertionError(what)


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Children]:
    c = Children(tmp_path_factory.mktemp("r"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture()
def http(children: Children) -> Iterator[httpx.Client]:
    """A client of child 0's public side."""
    with httpx.Client(base_url=children.children[0].url, timeout=GUARD_S) as c:
        yield c


def token(s: Session) -> dict[str, str]:
    """The session's own credential (an open server, as here, does not need it)."""
    return {"authorization": f"Bearer {s.secret}"}


def routed(outcome: str) -> float:
    value = REGISTRY.get_sample_value("emostream_requests_routed_total", {"outcome": outcome})
    return value or 0.0


# --- which paths are a session's -------------------------------------------------------


def test_the_session_paths_are_read_from_the_app() -> None:
    """Every HTTP route naming a session; the WebSockets (Twilio, AudioHook) open theirs."""
    templates = {p.template for p in session_paths(create_app(Settings()))}
    assert templates == {
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/events",
        "/v1/sessions/{session_id}/summary",
        "/whip/{session_id}",
    }


# --- a sibling's session ----------------------------------------------------------------


def test_status_of_a_siblings_session_comes_from_the_sibling(
    children: Children, http: httpx.Client
) -> None:
    s = children.open(1)
    before = routed("relayed")
    r = http.get(f"/v1/sessions/{s.id}", headers=token(s))
    assert r.status_code == 200, r.text
    assert r.json()["session_id"] == s.id
    assert routed("relayed") == before + 1


@pytest.mark.parametrize("path", ["/v1/sessions/{}", "/whip/{}"])
def test_delete_through_a_sibling_ends_the_session_where_it_is_held(
    children: Children, http: httpx.Client, path: str
) -> None:
    s = children.open(1)
    r = http.delete(path.format(s.id), headers=token(s))
    assert r.status_code == 200, r.text
    assert r.json() == {"ended": s.id}
    assert children.children[1].sessions.get(s.id) is None
    summary = http.get(f"/v1/sessions/{s.id}/summary", headers=token(s))  # kept by child 1
    assert summary.status_code == 200, summary.text
    assert summary.json()["session"] == s.id
    assert summary.json()["ended"] is not None


def test_a_live_summary_and_the_whip_resource_reach_the_owner(
    children: Children, http: httpx.Client
) -> None:
    s = children.open(1)
    summary = http.get(f"/v1/sessions/{s.id}/summary", headers=token(s))
    assert summary.status_code == 200, summary.text
    assert summary.json()["session"] == s.id
    assert "ended" not in summary.json()
    trickle = http.patch(
        f"/whip/{s.id}",
        headers={**token(s), "content-type": "application/trickle-ice-sdpfrag"},
        content=b"a=ice-ufrag:abcd\r\n",
    )
    assert trickle.status_code == 405  # the owner's answer; here it would be a 404
    assert trickle.json()["error"] == "trickle_not_supported"


def test_method_query_headers_and_body_reach_the_owner(
    children: Children, http: httpx.Client
) -> None:
    s = children.open(1)
    r = http.post(
        f"/v1/sessions/{s.id}/echo",
        params={"q": "é&x"},
        headers={"authorization": "Bearer abc"},
        content=b"x" * LIMIT,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "child": 1,
        "body": "x" * LIMIT,
        "q": "é&x",
        "authorization": "Bearer abc",
        "routed": "0",
    }
    chunked = http.post(f"/v1/sessions/{s.id}/echo", content=iter([b"ab", b"cd"]))
    assert chunked.json()["body"] == "abcd"


@pytest.mark.parametrize("chunks", [[b"x" * (LIMIT + 1)], [b"x" * LIMIT, b"y"]])
def test_a_body_over_the_limit_is_a_413(
    children: Children, http: httpx.Client, chunks: list[bytes]
) -> None:
    """Declared too big, or sent chunked and growing past it."""
    s = children.open(1)
    content = chunks[0] if len(chunks) == 1 else iter(chunks)
    r = http.post(f"/v1/sessions/{s.id}/echo", content=content)
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"


def test_events_stream_one_by_one_and_a_client_leaving_ends_the_owners_stream(
    children: Children, http: httpx.Client
) -> None:
    s = children.open(1)
    url = f"/v1/sessions/{s.id}/events"
    with http.stream("GET", url, params={"token": s.secret}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == f": session {s.id}"
        wait_for(lambda: len(s.subscribers) == 1, "the owner has no subscriber")
        for i in range(3):  # each event arrives before the next is published
            children.loop.call_soon_threadsafe(s.subscribers.publish, f'{{"n": {i}}}')
            assert next(line for line in lines if line) == f'data: {{"n": {i}}}'
    wait_for(lambda: len(s.subscribers) == 0, "the owner's stream outlived its client")


# --- no owner, no loop, no answer -------------------------------------------------------


def test_a_session_no_child_holds_is_answered_here(children: Children, http: httpx.Client) -> None:
    r = http.get("/v1/sessions/nobody")
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_session"
    assert http.post("/v1/sessions/nobody/echo").json()["child"] == 0


def test_a_relayed_request_is_never_relayed_again(children: Children, http: httpx.Client) -> None:
    """Two directories that disagree (each names the other) cost one hop, not a loop."""
    a, b = children.children
    a.directory["ping-pong"], b.directory["ping-pong"] = 1, 0
    r = http.post("/v1/sessions/ping-pong/echo")
    assert r.json() == {"child": 1, "body": "", "q": "", "authorization": None, "routed": "0"}
    assert http.get("/v1/sessions/ping-pong").status_code == 404


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.close()


@pytest.mark.parametrize("gone", ["no_socket", "nobody_listening", "hangs_up"])
def test_an_owner_that_does_not_answer_leaves_the_request_here(
    children: Children, http: httpx.Client, gone: str
) -> None:
    """Its process died (its sessions with it): the request goes on here, body and all."""
    path = children.socket_path(2)
    Path(path).unlink(missing_ok=True)
    server = None
    if gone == "nobody_listening":
        socket.socket(socket.AF_UNIX).bind(path)  # the file stays, nobody accepts
    elif gone == "hangs_up":
        server = children.run(_serve_unix(path))
    children.children[0].directory["lost"] = 2
    before = routed("unreachable")
    try:
        r = http.post("/v1/sessions/lost/echo", content=b"z" * 3000)
        assert r.status_code == 200, r.text
        assert (r.json()["child"], r.json()["body"]) == (0, "z" * 3000)
        status = http.get("/v1/sessions/lost")
        assert status.status_code == 404
        assert status.json()["error"] == "unknown_session"
        assert routed("unreachable") == before + 2
    finally:
        if server is not None:
            children.loop.call_soon_threadsafe(server.close)


async def _serve_unix(path: str) -> asyncio.Server:
    return await asyncio.start_unix_server(_hang_up, path)
