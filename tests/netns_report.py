"""pytest plugin for the run of tests/webrtc inside a network namespace: what it collected
and every test's result, as JSON lines, for the main run to report test by test.

    python -m pytest tests/webrtc -p netns_plugin -p netns_report --netns-report=FILE
        [--netns-select=IDS] [--collect-only]

``tests/netns_run.py`` (the main run's side) starts it twice: with ``--collect-only`` to
learn the test ids and markers (so the main run has one item per test), then once to run
the ones the main run selected (``--netns-select``: a JSON list of node ids; the others are
deselected). Each line of the report is flushed as it is written, so a run that is killed
still tells how far it got.

Standard library and pytest only: this module is imported before ``netns_plugin`` enters
the namespace, when no thread may exist yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netns_report")
    group.addoption("--netns-report", metavar="FILE", help="write collection and results here")
    group.addoption("--netns-select", metavar="FILE", help="JSON list of the node ids to run")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("netns_report")
    if path:
        config.pluginmanager.register(Reporter(Path(path)), "netns_reporter")


@pytest.hookimpl(trylast=True)  # after -k/-m: only narrows what they left
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = config.getoption("netns_select")
    if not path:
        return
    wanted = set(json.loads(Path(path).read_text(encoding="utf-8")))
    if any(item.nodeid not in wanted for item in items):
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in wanted])
        items[:] = [item for item in items if item.nodeid in wanted]


class Reporter:
    """Writes one JSON object a line: ``item`` (collected: node id, place, marker names),
    ``collect_error`` and ``report`` (a setup, call or teardown result)."""

    def __init__(self, path: Path) -> None:
        self.out = path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def pytest_unconfigure(self) -> None:
        self.out.close()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            path, lineno, _ = item.location
            markers = sorted({m.name for m in item.iter_markers()})
            self.write(
                {"kind": "item", "nodeid": item.nodeid, "path": path, "lineno": lineno}
                | {"markers": markers}
            )

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.write(
                {"kind": "collect_error", "nodeid": report.nodeid, "text": report.longreprtext}
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        reason, where = "", None
        if report.skipped and isinstance(report.longrepr, tuple):
            path, lineno, message = report.longrepr
            reason, where = str(message).removeprefix("Skipped: "), [str(path), lineno]
        self.write(
            {
                "kind": "report",
                "nodeid": report.nodeid,
                "when": report.when,
                "outcome": report.outcome,
                "duration": report.duration,
                "text": "" if report.passed or report.skipped else report.longreprtext,
                "message": _crash_message(report),
                "reason": reason,
                "where": where,
                "wasxfail": getattr(report, "wasxfail", None),
                "sections": [[title, body] for title, body in report.sections],
            }
        )


def _crash_message(report: pytest.TestReport) -> str:
    """The one line a failure's summary shows ("AssertionError: assert 1 == 2")."""
    crash = getattr(report.longrepr, "reprcrash", None)
    return str(getattr(crash, "message", "")) if report.failed else ""
