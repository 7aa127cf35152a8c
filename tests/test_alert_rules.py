"""The alert rules of deploy/prometheus/rules/: Prometheus' own checks and unit tests.

`promtool test rules` plays synthetic series through each rule, `for` durations included
(deploy/prometheus/tests/emostream.test.yml), so a rule that never fires, fires too early
or says the wrong thing fails here. What the issue asks of each rule is checked as data.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from emostream import metrics
from emostream.dashboards.catalog import metric_names

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (`make sysdeps` installs Debian's prometheus)")
    return promtool


def _rules() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out[rule.get("alert") or rule["record"]] = rule
    return out


@pytest.mark.prometheus
def test_promtool_check_rules() -> None:
    files = sorted(str(p) for p in RULES_DIR.glob("*.yml"))
    assert files, "no rule files"
    proc = subprocess.run(
        [_promtool(), "check", "rules", *files], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.prometheus
def test_promtool_unit_tests_of_every_alert() -> None:
    tests = sorted(RULE_TESTS.glob("*.test.yml"))
    proc = subprocess.run(
        [_promtool(), "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = {
        case["alertname"]
        for path in tests
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a test where it fires, not only where it stays quiet
    }
    assert tested == set(_rules()), f"alerts without a firing test: {set(_rules()) - tested}"


def test_the_alerts_the_issue_asks_for() -> None:
    rules = _rules()
    drift = rules["EmostreamClassDrift"]
    assert "emostream_drift_psi" in drift["expr"] and "> 0.25" in drift["expr"]
    assert drift["for"] == "15m"
    latency = rules["EmostreamEndToEndLatencyHigh"]["expr"]
    assert "histogram_quantile(0.99" in latency and 'stage="end_to_end", modality="face"' in latency
    assert "> 0.1" in latency
    voice = rules["EmostreamVoiceLatencyHigh"]["expr"]  # window end to message, issue 14
    assert 'modality="voice"' in voice and "> 0.2" in voice
    assert "> 0.05" in rules["EmostreamDropRatioHigh"]["expr"]
    assert "emostream_worker_info" in rules["EmostreamNoWorkerUp"]["expr"]
    assert "emostream_broker_up == 0" in rules["EmostreamRedisUnreachable"]["expr"]


def test_rules_use_only_metrics_the_package_exports() -> None:
    known = metrics.exported_names() | {"up"}
    for name, rule in _rules().items():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{name} uses unknown metrics {unknown}"
        labels = rule.get("labels", {})
        assert labels.get("severity") in ("warning", "critical"), name
        assert {"summary", "description"} <= set(rule.get("annotations", {})), name
