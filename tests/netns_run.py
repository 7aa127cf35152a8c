"""The main run's side of tests/webrtc: one item per WebRTC test, all of them run by a single
pytest process inside a private network namespace.

WebRTC peers gather ICE candidates on every interface, so these tests run only in a
namespace with no route out (``emostream.bench.netns``). The main test process stays in
the normal namespace (Redis and Prometheus tests use its loopback) and never imports a
module of tests/webrtc: ``tests/webrtc/conftest.py`` turns each of its files into a
:class:`WebRTCFile` whose items come from a child

    python -m pytest tests/webrtc --collect-only -p netns_plugin -p netns_report ...

(``netns_plugin`` moves the child into a fresh namespace before anything else happens;
``netns_report`` writes what it collected as JSON lines). The first of those items to run
starts the one real run, again a child in a namespace of its own, with exactly the ids the
main run selected (``-k``, ``-m``, node ids, ``--lf``); every item then reports its own
test's setup, call and teardown as the child saw them: passed, failed with the child's
traceback and captured output, skipped with its reason. The child's log, report and JUnit
XML stay in ``test-output/webrtc/``. Without namespaces here (not root) every item skips
with the reason and no child runs tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emostream.bench import netns

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
INNER_TIMEOUT_S = 1500.0  # the whole inner run (about 300 s here when the machine is quiet)
TEST_TIMEOUT_S = 240.0  # any one test of it
COLLECT_TIMEOUT_S = 300.0  # the child that only collects (a few seconds); failure guard
TAIL_LINES = 60  # of the child's output, shown when it ends without a test's result
#: Markers of a child's test that the main run's item does not copy: they act only where
#: the test function runs (the child), or carry arguments an item copy would lose.
NOT_COPIED = {"parametrize", "usefixtures", "filterwarnings", "skip", "skipif", "xfail", "timeout"}


def output_dir() -> Path:
    base = Path(os.environ.get("EMOSTREAM_TEST_OUTPUT", ROOT / "test-output"))
    path = base / "webrtc"
    path.mkdir(parents=True, exist_ok=True)
    return path


def child_command(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        *args,
        "-p",
        "netns_plugin",  # first: into the namespace before anything else
        "-p",
        "netns_report",
        "-p",
        "no:cacheprovider",
    ]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    for name in (netns.ENV_NETNS, netns.ENV_UNAVAILABLE):
        env.pop(name, None)  # the child decides for itself
    return env


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def tail(text: str, n: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-n:])


@dataclass
class Collected:
    """What the collecting child found: items by node id, collection errors by file."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # the child itself failed: no report to go by


@dataclass
class Results:
    """What the running child reported: per node id, per phase (setup, call, teardown)."""

    command: list[str]
    status: int
    seconds: float
    log: Path
    reports: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def summary(self) -> str:
        outcomes: Counter[str] = Counter()
        for phases in self.reports.values():
            if any(r["outcome"] == "failed" for r in phases.values()):
                outcomes["failed"] += 1
            elif any(r["outcome"] == "skipped" for r in phases.values()):
                outcomes["skipped"] += 1
            else:
                outcomes["passed"] += 1
        counts = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "no test reported"
        return (
            f"tests/webrtc in a private network namespace: {counts} in {self.seconds:.0f} s "
            f"(exit {self.status}; log {self.log})"
        )

    def missing(self) -> str:
        """Why a test has no result: the child's command, status and last lines."""
        output = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return (
            f"the namespaced pytest run gave no result for this test\n"
            f"$ {' '.join(self.command)}\nexited {self.status}; its last lines:\n{tail(output)}"
        )


class Children:
    """The two children of one main run: collecting (once, when the first file is
    collected) and running (once, when the first item runs)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.out = output_dir()
        self._collected: Collected | None = None
        self._unavailable: list[str | None] = []
        self.results: Results | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def unavailable(self) -> str | None:
        """Why no private namespace can be made here, or None (probed once)."""
        if not self._unavailable:
            self._unavailable.append(netns.unavailable_reason())
        return self._unavailable[0]

    def collected(self) -> Collected:
        if self._collected is None:
            self._collected = self._collect()
        return self._collected

    def _collect(self) -> Collected:
        report = self.out / "collect.jsonl"
        report.unlink(missing_ok=True)
        command = child_command("tests/webrtc", "--collect-only", "-q", f"--netns-report={report}")
        try:
            proc = subprocess.run(
                command,
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COLLECT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return Collected(problem=f"collecting tests/webrtc took over {exc.timeout:.0f} s")
        found = Collected()
        for record in read_jsonl(report):
            if record["kind"] == "item":
                found.items[record["nodeid"]] = record
            elif record["kind"] == "collect_error":
                found.errors[record["nodeid"]] = record["text"]
        if not found.items and not found.errors:
            found.problem = (
                f"$ {' '.join(command)}\nexited {proc.returncode} without a report:\n"
                + tail(proc.stdout + proc.stderr)
            )
        return found

    def run(self, session: pytest.Session) -> Results:
        if self.results is None:
            selected = [i.nodeid for i in session.items if isinstance(i, WebRTCTest)]
            self.results = self._run(selected)
        return self.results

    def _run(self, selected: list[str]) -> Results:
        files = sorted({nodeid.split("::", 1)[0] for nodeid in selected})
        select, report = self.out / "selected.json", self.out / "report.jsonl"
        log, xml = self.out / "output.txt", self.out / "junit.xml"
        select.write_text(json.dumps(selected, indent=0))
        for stale in (report, xml):
            stale.unlink(missing_ok=True)
        command = child_command(
            *files,
            f"--netns-select={select}",
            f"--netns-report={report}",
            "-v",  # test names in the log: a killed run still says where it stood
            "-rfEs",
            "-o",
            f"timeout={TEST_TIMEOUT_S:.0f}",  # one stuck test fails alone, with its stack
            f"--junitxml={xml}",
        )
        start = time.monotonic()
        with log.open("wb") as sink:
            # A session of its own, so that a timeout ends the child and all it started.
            self._proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                status = self._proc.wait(timeout=INNER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.stop()
                status = self._proc.wait()
                sink.write(f"\n[killed after {INNER_TIMEOUT_S:.0f} s]\n".encode())
            finally:
                self.stop()
        results = Results(command, status, time.monotonic() - start, log)
        for record in read_jsonl(report):
            if record["kind"] == "report":
                results.reports.setdefault(record["nodeid"], {})[record["when"]] = record
        return results

    def stop(self) -> None:
        """End the running child and everything it started, if it still runs."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)


_CHILDREN = pytest.StashKey[Children]()


def children(config: pytest.Config) -> Children:
    if _CHILDREN not in config.stash:
        config.stash[_CHILDREN] = Children(config)
        config.add_cleanup(config.stash[_CHILDREN].stop)
    return config.stash[_CHILDREN]


def finished(config: pytest.Config) -> Results | None:
    """The results of this main run's namespaced run, if one ran."""
    found = config.stash.get(_CHILDREN, None)
    return None if found is None else found.results


class WebRTCFile(pytest.File):
    """A test file of tests/webrtc in the main run: its tests as the collecting child saw
    them, without importing it here."""

    def collect(self) -> Iterator[WebRTCTest]:
        found = children(self.config).collected()
        rel = self.path.relative_to(self.config.rootpath).as_posix()
        if found.problem is not None:
            raise self.CollectError(f"could not collect tests/webrtc:\n{found.problem}")
        for where, text in found.errors.items():  # this file's, or its folder's
            if where == rel or rel.startswith(f"{where}/") or where in ("", "."):
                raise self.CollectError(text)
        for nodeid, record in found.items.items():
            path, _, name = nodeid.partition("::")
            if path == rel:
                yield WebRTCTest.from_parent(self, name=name, record=record)


class InnerFailure(Exception):
    """A failure (or error) the namespaced run reported, with its own text."""

    def __init__(self, text: str, message: str = "") -> None:
        super().__init__(text)
        self.text = text
        lines = text.strip().splitlines()
        self.message = message or (lines[0] if lines else "")


@dataclass
class Crash:
    """Where the summary line of a failure comes from (``longrepr.reprcrash.message``)."""

    message: str


@dataclass
class InnerRepr:
    """A report's ``longrepr`` made of the child's text: printed as it is, its crash
    message on the short summary line and in the JUnit XML."""

    text: str
    reprcrash: Crash

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


class WebRTCTest(pytest.Item):
    """One test of tests/webrtc, reported from the namespaced run."""

    def __init__(self, *, record: dict[str, Any], **kw: Any) -> None:
        super().__init__(**kw)
        self.lineno: int = record["lineno"]
        known = {line.split(":")[0].strip() for line in self.config.getini("markers")}
        for name in record["markers"]:
            if name in known and name not in NOT_COPIED:
                self.add_marker(name)
        self.add_marker("webrtc")
        self.add_marker("slow")  # each one waits for the whole namespaced run
        self.add_marker(pytest.mark.timeout(INNER_TIMEOUT_S + 60), append=False)
        self.phases: dict[str, dict[str, Any]] | None = None

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.lineno, self.name

    def setup(self) -> None:
        reason = children(self.config).unavailable()
        if reason is not None:
            pytest.skip(f"tests/webrtc needs a private network namespace: {reason}")
        results = children(self.config).run(self.session)
        self.phases = results.reports.get(self.nodeid)
        if not self.phases:
            raise InnerFailure(results.missing())
        self._mirror("setup")

    def runtest(self) -> None:
        assert self.phases is not None
        if "call" not in self.phases:
            results = finished(self.config)
            raise InnerFailure(results.missing() if results else "no result")
        self._mirror("call")

    def teardown(self) -> None:
        if self.phases is not None and "teardown" in self.phases:
            self._mirror("teardown")

    def _mirror(self, when: str) -> None:
        report = self.phases[when] if self.phases else None
        if report is None or report["outcome"] == "passed":
            return
        if report["outcome"] == "skipped":
            if report["wasxfail"] is not None:
                pytest.xfail(report["wasxfail"])
            pytest.skip(report["reason"])
        sections = "".join(f"\n{'-' * 20} {t} {'-' * 20}\n{b}" for t, b in report["sections"])
        raise InnerFailure(f"{report['text']}{sections}", report["message"])

    def adjust(self, report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
        """Make this item's report of a phase read as the child's (``pytest_runtest_makereport``
        calls this): its traceback and captured output, where it skipped, its duration (not
        the wait for the whole namespaced run, which the terminal summary gives)."""
        inner = (self.phases or {}).get(report.when or "")
        report.duration = 0.0 if inner is None else float(inner["duration"])
        if call.excinfo is not None and isinstance(call.excinfo.value, InnerFailure):
            failure = call.excinfo.value
            longrepr: Any = InnerRepr(failure.text, Crash(failure.message))  # a TerminalRepr
            report.longrepr = longrepr
        elif report.skipped and isinstance(report.longrepr, tuple):
            path, lineno = (inner or {}).get("where") or (str(self.path), self.lineno + 1)
            report.longrepr = (path, lineno, report.longrepr[2])
