"""tests/netns_report.py, through which the namespaced run of tests/webrtc tells the main run
what it collected and how each test went (tests/netns_run.py reads it), on a small suite
of its own: no namespace, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from netns_run import TESTS, read_jsonl

SUITE = """
import pytest

def test_passes():
    pass

def test_fails():
    print("said before failing")
    assert 1 == 2

def test_skips():
    pytest.skip("not here")

@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    pass
"""


def _child(folder: Path, *args: str) -> list[dict[str, Any]]:
    (folder / "test_suite.py").write_text(SUITE)
    report = folder / "report.jsonl"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "test_suite.py", "-p", "netns_report"]
    command += [f"--netns-report={report}", "-p", "no:cacheprovider", "-q", *args]
    proc = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return list(read_jsonl(report))


def test_collecting_lists_every_test_with_its_place_and_markers(tmp_path: Path) -> None:
    items = {r["nodeid"]: r for r in _child(tmp_path, "--collect-only") if r["kind"] == "item"}
    assert list(items) == [
        "test_suite.py::test_passes",
        "test_suite.py::test_fails",
        "test_suite.py::test_skips",
        "test_suite.py::test_param[1]",
        "test_suite.py::test_param[2]",
    ]
    assert items["test_suite.py::test_param[2]"]["markers"] == ["parametrize", "slow"]
    assert items["test_suite.py::test_fails"]["path"] == "test_suite.py"


def test_only_the_selected_tests_run_and_each_phase_is_reported(tmp_path: Path) -> None:
    selected = ["test_suite.py::test_fails", "test_suite.py::test_skips"]
    selected.append("test_suite.py::test_param[2]")
    (tmp_path / "selected.json").write_text(json.dumps(selected))
    records = _child(tmp_path, f"--netns-select={tmp_path / 'selected.json'}")
    phases: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r["kind"] == "report":
            phases.setdefault(r["nodeid"], {})[r["when"]] = r
    assert sorted(phases) == sorted(selected)
    assert all(set(p) == {"setup", "call", "teardown"} for p in phases.values())
    failed = phases["test_suite.py::test_fails"]["call"]
    assert failed["outcome"] == "failed" and "assert 1 == 2" in failed["text"]
    assert failed["message"] == "assert 1 == 2"
    assert ["Captured stdout call", "said before failing\n"] in failed["sections"]
    skipped = phases["test_suite.py::test_skips"]["call"]
    assert skipped["outcome"] == "skipped" and skipped["reason"] == "not here"
    assert Path(skipped["where"][0]) == tmp_path / "test_suite.py"
    assert phases["test_suite.py::test_param[2]"]["call"]["outcome"] == "passed"
