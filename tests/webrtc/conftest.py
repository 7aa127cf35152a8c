"""tests/webrtc: real aiortc peers, only ever inside a private network namespace.

The main test run does not collect this folder: ``tests/test_netns_webrtc.py`` runs it as

    python -m pytest tests/webrtc -p tests.netns_plugin

in a subprocess whose plugin first moves that process into its own network namespace
(10.213.0.1 on a veth pair, no route out). Inside that run every test here is collected;
each one is skipped, with the reason, unless the process really is in such a namespace.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from emostream.bench import netns

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

HERE = Path(__file__).resolve().parent
TASK_STOP_S = 10.0
NOT_INSIDE = (
    "tests/webrtc runs only inside a private network namespace: run the main suite "
    "(tests/test_netns_webrtc.py starts it) or "
    "`python -m pytest tests/webrtc -p tests.netns_plugin`"
)


def _namespaced_run() -> bool:
    """Whether this pytest process was started to run tests/webrtc (netns_plugin loaded)."""
    return netns.ENV_NETNS in os.environ or netns.ENV_UNAVAILABLE in os.environ


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if _namespaced_run():
        return None
    path = collection_path.resolve()
    if path != HERE and HERE in path.parents:
        return True  # the main run: tests/test_netns_webrtc.py runs these in a namespace
    return None


@pytest.fixture(scope="session", autouse=True)
def netns_ip() -> str:
    """The private namespace's address (10.213.0.1); skips every test when not inside one.

    Session-scoped, so fixtures of any scope (a server per module, say) can use it.
    """
    ip = netns.current_private_netns()
    if ip is None:
        pytest.skip(os.environ.get(netns.ENV_UNAVAILABLE) or NOT_INSIDE)
    return ip


@pytest.fixture()
def rtc_configuration() -> RTCConfiguration:
    """What every RTCPeerConnection in these tests gets: no ICE servers, so no STUN lookup."""
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])


@pytest.fixture(autouse=True)
async def _no_task_outlives_its_test() -> AsyncIterator[None]:
    """Cancel what a test left running, bounded, and name any task that will not stop.

    pytest-asyncio closes each test's loop by cancelling every task and waiting for all of
    them without a limit; one task that ignores its cancellation would hang the whole run
    until the suite's outer timeout kills it, with no word of which test or task it was.
    """
    yield
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in left:
        t.cancel()
    if not left:
        return
    _, pending = await asyncio.wait(left, timeout=TASK_STOP_S)
    if pending:
        stacks = io.StringIO()
        for t in pending:
            print(t, file=stacks)
            t.print_stack(file=stacks)
        sys.stderr.write(f"tasks still running {TASK_STOP_S} s after cancel:\n{stacks.getvalue()}")
        for t in pending:  # let the loop close: forget them (the process ends soon anyway)
            asyncio.tasks._all_tasks.discard(t)  # type: ignore[attr-defined]
        pytest.fail(f"{len(pending)} task(s) ignored cancellation:\n{stacks.getvalue()}")
