"""Runs tests/webrtc in a separate pytest process inside a private network namespace.

WebRTC peers gather ICE candidates on every interface, so they run only in a namespace with
no route out (emostream.bench.netns). This main test process stays in the normal namespace (Redis
and Prometheus tests use its loopback); it starts

    python -m pytest tests/webrtc -p netns_plugin

whose plugin moves that whole process into a fresh anonymous namespace before anything else
happens. This test fails with the inner run's output when the inner run fails, skips when
namespaces cannot be made here (not root), and leaves the inner run's log and JUnit XML in
test-output/. The main run never collects tests/webrtc itself (tests/webrtc/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emostream.bench import netns

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
INNER_TIMEOUT_S = 1500.0  # the whole inner run (about 300 s here when the machine is quiet)
TEST_TIMEOUT_S = 240.0  # any one test of it

pytestmark = pytest.mark.slow


@dataclass
class Counts:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    def __str__(self) -> str:
        return (
            f"tests/webrtc in a private network namespace: {self.passed} passed, "
            f"{self.failures} failed, {self.errors} errors, {self.skipped} skipped"
        )


def read_junit(path: Path) -> Counts:
    counts = Counts()
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        for name in ("tests", "failures", "errors", "skipped"):
            setattr(counts, name, getattr(counts, name) + int(suite.get(name, "0")))
        for case in suite.iter("testcase"):
            for skip in case.iter("skipped"):
                counts.skip_reasons.append(f"{case.get('name')}: {skip.get('message', '')}")
    return counts


def run_inner(xml: Path) -> tuple[list[str], int, str]:
    """Run the inner pytest; return its command, exit status and output."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/webrtc",
        "-p",
        "netns_plugin",
        "-p",
        "no:cacheprovider",
        "-v",  # test names in the output: a killed run still says where it stood
        "-rfEs",
        "-o",
        f"timeout={TEST_TIMEOUT_S:.0f}",  # one stuck test fails alone, with its stack
        f"--junitxml={xml}",
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    for name in (netns.ENV_NETNS, netns.ENV_UNAVAILABLE):
        env.pop(name, None)
    # A session of its own, so that a timeout ends the inner run and all it started.
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=INNER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n[killed after {INNER_TIMEOUT_S:.0f} s]"
    return command, proc.returncode, output


@pytest.mark.timeout(INNER_TIMEOUT_S + 60)
def test_webrtc_suite_in_private_netns(
    output_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(f"tests/webrtc needs a private network namespace: {reason}")
    xml = output_dir / "junit.xml"
    xml.unlink(missing_ok=True)
    command, status, output = run_inner(xml)
    (output_dir / "output.txt").write_text(output)
    counts = read_junit(xml) if xml.is_file() else None
    summary = str(counts) if counts else "tests/webrtc: no JUnit report"
    record_property("webrtc", summary)
    if status != 0:
        pytest.fail(
            f"{summary}\n$ {' '.join(command)}\nexited {status}; its output:\n{output}",
            pytrace=False,
        )
    assert counts is not None
    print(summary)
    if counts.passed == 0:
        pytest.skip(f"{summary}: " + "; ".join(counts.skip_reasons))
