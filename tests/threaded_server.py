"""``emostream serve``'s own uvicorn configuration on a thread of the test process, for the
call transports' tests: their clients speak to it over 127.0.0.1 while the test reads the
server's state (sessions, tasks, metrics) directly."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from emostream.settings import Settings
from emostream.stream.app import AppState, create_app
from emostream.stream.server import uvicorn_config


@contextlib.contextmanager
def threaded_server(
    settings: Settings, guard_s: float
) -> Iterator[tuple[AppState, asyncio.AbstractEventLoop]]:
    """The server on ``settings`` (its app state and event loop) until the block ends;
    ``guard_s``: the longest it may take to start and to stop (a failure guard)."""
    state = AppState(settings)
    server = uvicorn.Server(uvicorn_config(create_app(settings, state), settings))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(),), name="uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + guard_s
    while not server.started:
        assert thread.is_alive(), "the server thread exited before it started"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield state, loop
    finally:
        server.should_exit = True
        thread.join(guard_s)
        if not thread.is_alive():
            loop.close()
