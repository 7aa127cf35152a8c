"""tests/webrtc: real aiortc peers, only ever inside a private network namespace.

The main test run never imports these files: it collects each as a ``WebRTCFile``
(``tests/netns_run.py``) whose items are the tests that a child

    python -m pytest tests/webrtc -p netns_plugin ...

collected inside a namespace of its own, and whose first item to run starts the one run of
the selected tests in such a child (10.213.0.1 on a veth pair, no route out); each item
then reports its own test's result. So ``pytest tests/webrtc/test_ingest.py -k whip`` in
the main run runs just those, in a namespace. Inside the child every test here is
collected, and each one is skipped, with the reason, unless the process really is in such
a namespace.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from emostream.bench import netns

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

TASK_STOP_S = 10.0
NOT_INSIDE = (
    "tests/webrtc runs only inside a private network namespace: run it from the main "
    "suite (`pytest tests/webrtc`: tests/netns_run.py starts the namespaced run) or "
    "`python -m pytest tests/webrtc -p tests.netns_plugin`"
)


def _namespaced_run() -> bool:
    """Whether this pytest process was started to run tests/webrtc (netns_plugin loaded)."""
    return netns.ENV_NETNS in os.environ or netns.ENV_UNAVAILABLE in os.environ


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    """The main run: a file of tests that a namespaced child runs, never imported here."""
    if _namespaced_run():
        return None
    from netns_run import WebRTCFile

    return WebRTCFile.from_parent(parent, path=module_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """The main run: each item's report reads as its test's in the child."""
    report = yield
    if _namespaced_run():
        return report
    from netns_run import WebRTCTest

    if isinstance(item, WebRTCTest):
        item.adjust(report, call)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _namespaced_run():
        return
    from netns_run import finished

    results = finished(config)
    if results is not None:
        terminalreporter.write_line(results.summary())


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
