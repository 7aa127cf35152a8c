"""emostream.bench.netns: private network namespaces, checked from child processes.

This process never enters a namespace itself: every check runs in a short-lived child. No
test sends a packet: "no route out" is checked with a UDP ``connect()``, which on Linux only
looks up a route.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from emostream.bench import netns

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
IP = "10.213.0.1"
TIMEOUT_S = 60.0

# What a child reports about the namespace it is in (argv[1] is tests/).
REPORT = """
import errno, json, subprocess, sys
from emostream.bench import netns
def report():
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    return {
        "ns": netns.current_netns_id(),
        "private": netns.current_private_netns(),
        "default_route": netns.has_default_route(),
        "udp4": errno.errorcode.get(netns.udp_route_errno("8.8.8.8"), "OK"),
        "udp6": errno.errorcode.get(netns.udp_route_errno("2001:4860:4860::8888"), "OK"),
        "ipv4": sorted(line.split()[1] + " " + line.split()[3] for line in addrs.splitlines()),
    }
"""


def need_netns() -> None:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def run_child(code: str, *prefix: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", REPORT + code, str(TESTS)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_this_process_is_not_in_a_private_namespace() -> None:
    assert netns.current_private_netns() is None
    assert netns.ENV_NETNS not in os.environ


def test_enter_private_netns_moves_only_the_child() -> None:
    need_netns()
    outside = netns.current_netns_id()
    child = run_child(
        """
before = netns.current_netns_id()
ip = netns.enter_private_netns()
inside = report()
# a grandchild inherits the namespace and finds it through the environment
grandchild = subprocess.run(
    [sys.executable, "-c", "from emostream.bench import netns;"
     "print(netns.current_private_netns(), netns.current_netns_id())", sys.argv[1]],
    capture_output=True, text=True, check=True).stdout.split()
print(json.dumps({"ip": ip, "before": before, "inside": inside, "grandchild": grandchild}))
"""
    )
    inside = child["inside"]
    assert child["ip"] == IP
    assert child["before"] == outside
    assert inside["ns"] != outside
    assert netns.current_netns_id() == outside  # this process did not move
    assert inside["private"] == IP
    assert inside["default_route"] is False
    # connect() on a UDP socket picks a route without sending: there is none.
    assert inside["udp4"] == "ENETUNREACH"
    assert inside["udp6"] in ("ENETUNREACH", "EAFNOSUPPORT", "EADDRNOTAVAIL")
    assert inside["ipv4"] == ["e0 10.213.0.1/24", "lo 127.0.0.1/8"]
    assert child["grandchild"] == [IP, inside["ns"]]


def test_peer_address_goes_on_e1() -> None:
    need_netns()
    child = run_child(
        """
netns.enter_private_netns("10.213.0.1/24", peer_addr="10.213.0.2/24")
print(json.dumps(report()))
"""
    )
    assert child["ipv4"] == ["e0 10.213.0.1/24", "e1 10.213.0.2/24", "lo 127.0.0.1/8"]
    assert child["udp4"] == "ENETUNREACH"


def test_enter_refuses_once_other_threads_exist() -> None:
    need_netns()
    child = run_child(
        """
import threading
stop = threading.Event()
worker = threading.Thread(target=stop.wait)
worker.start()
try:
    netns.enter_private_netns()
    outcome = "entered"
except RuntimeError as exc:
    outcome = str(exc)
stop.set()
worker.join()
print(json.dumps({"outcome": outcome, "ns": netns.current_netns_id()}))
"""
    )
    assert "threads exist" in child["outcome"]
    assert child["ns"] == netns.current_netns_id()


def test_without_privileges_it_is_unavailable_not_an_error() -> None:
    need_netns()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not found")
    # root with an empty capability bounding set: what an unprivileged CI runner looks like
    drop = (setpriv, "--bounding-set=-all", "--inh-caps=-all", "--")
    child = run_child(
        """
try:
    netns.enter_private_netns()
    outcome = "entered"
except netns.NetnsUnavailable as exc:
    outcome = "unavailable: " + str(exc)
print(json.dumps({"outcome": outcome, "ns": netns.current_netns_id()}))
""",
        *drop,
    )
    assert child["outcome"].startswith("unavailable: unshare(CLONE_NEWNET) not permitted")
    assert child["ns"] == netns.current_netns_id()


@pytest.mark.slow
def test_unprivileged_webrtc_run_skips_with_the_reason() -> None:
    """tests/webrtc never runs outside a namespace: without privileges it all skips."""
    need_netns()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not found")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOSTREAM_TEST_NETNS")}
    env["PYTHONPATH"] = str(TESTS)
    proc = subprocess.run(
        [
            *(setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"),
            sys.executable,
            "-m",
            "pytest",
            "tests/webrtc/test_harness.py",
            "-p",
            "netns_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 2,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "passed" not in out and " skipped" in out, out
    assert "unshare(CLONE_NEWNET) not permitted" in out, out


def test_run_in_netns_cleans_up() -> None:
    need_netns()
    proc = netns.run_in_netns(
        [
            sys.executable,
            "-c",
            REPORT
            + """
lingering = subprocess.Popen(["sleep", "300"], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(json.dumps({**report(), "lingering": lingering.pid}))
""",
            str(TESTS),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["private"] == IP
    assert child["ns"] != netns.current_netns_id()
    assert child["default_route"] is False
    assert child["udp4"] == "ENETUNREACH"
    assert child["ipv4"] == ["e0 10.213.0.1/24", "lo 127.0.0.1/8"]

    # the process it left behind was killed (SIGKILL is delivered asynchronously: on a busy
    # machine the victim may still be running for a moment, so poll as a failure guard)
    # and the namespace deleted
    def alive() -> bool:
        try:
            os.kill(child["lingering"], 0)
            return Path(f"/proc/{child['lingering']}/stat").read_text().split()[2] != "Z"
        except (ProcessLookupError, FileNotFoundError):
            return False

    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(line.startswith(f"emotest{os.getpid()}_") for line in names.splitlines())


def test_udp_route_errno_outside_is_not_a_send() -> None:
    # Outside any namespace: a route to 127.0.0.1 exists, connect() succeeds, nothing sent.
    assert netns.udp_route_errno("127.0.0.1") == 0
