"""Metrics of several processes in one exposition (``serve --processes N``).

Real child interpreters write emostream's real metrics into one multiprocess directory;
this process reads them as the supervising parent does. Each child's own single-process
run is the reference for names and labels.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from emostream import metrics
from emostream.bench.procs import base_env
from emostream.metrics_sampled import ENV

CHILD = Path(__file__).with_name("metrics_child.py")
Key = tuple[str, frozenset[tuple[str, str]]]


class Child:
    """``metrics_child.py`` in its own interpreter; ``page`` is its own exposition."""

    def __init__(self, scenario: str, env: dict[str, str], **args: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), scenario, json.dumps(args)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.page = self.until("#done")

    def until(self, marker: str) -> str:
        assert self.proc.stdout is not None
        lines = []
        for line in self.proc.stdout:
            if line.strip() == marker:
                return "".join(lines)
            lines.append(line)
        raise AssertionError(f"child exited with {self.proc.wait()} before {marker}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def end(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(60) == 0


def samples(page: bytes | str) -> dict[Key, float]:
    """emostream's samples by (name, labels); ``_created`` is not exported by merged files."""
    text = page.decode() if isinstance(page, bytes) else page
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("emostream_") and not s.name.endswith("_created")
    }


def key(name: str, **labels: str) -> Key:
    return (name, frozenset(labels.items()))


def single_env() -> dict[str, str]:
    env = base_env()
    env.pop(ENV, None)
    return env


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached (failure guard, not a speed check)")


FRAMES = key("emostream_frames_in_total", modality="face")
SESSIONS = key("emostream_active_sessions")
BROKER = key("emostream_broker_up")
DECODE = {"stage": "decode", "modality": "face"}


def bucket(le: str) -> Key:
    return key("emostream_stage_latency_seconds_bucket", le=le, **DECODE)


def info(version: str) -> Key:
    return key("emostream_model_info", model="m", version=version, modality="face", provider="cpu")


def test_counters_and_histograms_sum_and_an_exited_process_gauges_leave() -> None:
    with metrics.multiprocess_dir() as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        env = base_env(**metrics.child_env(path))
        alive = Child("count", env, frames=2, sessions=3, broker_up=1, observations=1)
        gone = Child("count", env, frames=5, sessions=4, broker_up=0, observations=2)
        gone.end()

        both = samples(metrics.exposition(path))
        assert both[FRAMES] == 7
        assert both[SESSIONS] == 7  # exited, but not yet reported dead
        assert both[BROKER] == 0  # livemin: one process did not reach its broker
        assert both[bucket("0.005")] == 2
        assert both[bucket("0.5")] == 3
        assert both[bucket("+Inf")] == 3
        assert both[key("emostream_stage_latency_seconds_count", **DECODE)] == 3
        assert math.isclose(both[key("emostream_stage_latency_seconds_sum", **DECODE)], 0.308)
        assert both[info("2")] == 1
        assert info("1") not in both  # removed in both processes

        metrics.process_died(gone.proc.pid, path)
        after = samples(metrics.exposition(path))
        assert after[FRAMES] == 7  # its counters stay summed
        assert after[bucket("+Inf")] == 3
        assert after[SESSIONS] == 3  # its live gauges left
        assert after[BROKER] == 1

        single = Child("count", single_env(), frames=2, sessions=3, broker_up=1, observations=1)
        single.end()
        assert set(samples(single.page)) == set(both) == set(after)

        alive.end()
        metrics.process_died(alive.proc.pid, path)
        last = samples(metrics.exposition(path))
        assert last[FRAMES] == 7
        assert SESSIONS not in last
    assert not path.exists()


def test_the_real_metrics_module_exposes_the_same_series_in_multiprocess_mode() -> None:
    with metrics.multiprocess_dir() as path:
        multi = Child("serve", base_env(**metrics.child_env(path)))
        single = Child("serve", single_env())
        single.end()
        own = samples(multi.page)
        assert set(own) == set(samples(single.page))
        window = key("emostream_drift_window_samples", model="m", version="2", modality="face")
        assert own[window] == 3
        voice = {"model": "v", "version": "1", "modality": "voice"}
        assert key("emostream_drift_psi", model="m", version="1", modality="face") not in own
        assert key("emostream_drift_psi", **voice) not in own
        assert own[key("emostream_drift_reference_missing", **voice)] == 1

        read = samples(metrics.exposition(path))  # the parent's view of the same files
        assert set(read) == set(own)
        assert read[window] == 3
        multi.send("observe")
        multi.until("#observed")
        # the child's sampler writes the function's new value without a scrape of its own
        _wait(lambda: samples(metrics.exposition(path))[window] == 5)
        multi.end()
        metrics.process_died(multi.proc.pid, path)
        assert window not in samples(metrics.exposition(path))
    assert not path.exists()


def test_every_gauge_merges_without_a_pid_label_and_leaves_with_its_process() -> None:
    gauges = [v for v in vars(metrics).values() if isinstance(v, Gauge)]
    assert len(gauges) >= 9
    for gauge in gauges:
        assert gauge._multiprocess_mode in {"livesum", "livemax", "livemin"}, gauge


def test_process_died_needs_a_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ValueError, match=ENV):
        metrics.process_died(os.getpid())
