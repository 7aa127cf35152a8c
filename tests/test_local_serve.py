"""``emostream serve --processes 2`` as real processes on loopback (no WebRTC here; the
streaming tests are in tests/webrtc/test_processes.py): readiness that follows the
inference processes, one ``/metrics`` for the whole server, the refused Redis layout."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emostream.bench.procs import EMOSTREAM, Server, base_env, descendants, metric


def _inference(server: Server) -> list[int]:
    out = []
    for pid in descendants(server.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"emostream.local.child" in argv and b"inference" in argv:
            out.append(pid)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(
        "127.0.0.1",
        tmp_path_factory.mktemp("local-serve"),
        EMOSTREAM_LOCAL__PROCESSES="2",
        EMOSTREAM_LOCAL__INFERENCE="1",
        EMOSTREAM_LOCAL__RESTART_BACKOFF_S="1",
    )
    yield s
    assert s.stop() == 0


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False)


def test_readyz_names_the_layout_and_metrics_are_the_whole_servers(server: Server) -> None:
    ready = _get(f"{server.url}/readyz").json()
    assert ready["processes"]["ingest"] == 2 and ready["processes"]["inference_ready"] == 1
    page = _get(f"{server.url}/metrics").text
    assert metric(page, "emostream_local_inference_ready") == 1
    assert "process_cpu_seconds_total" not in page  # multiprocess mode (documented)
    assert metric(page, "emostream_worker_info") >= 1  # written by the inference process


def test_readiness_says_so_at_once_when_no_inference_process_is_alive(server: Server) -> None:
    (victim,) = _inference(server)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10  # a failure guard; the hub hears of it at once
    while time.monotonic() < deadline:
        r = _get(f"{server.url}/readyz")
        if r.status_code == 503:
            break
        time.sleep(0.05)
    assert r.status_code == 503 and "no inference process" in r.json()["reason"]
    deadline = time.monotonic() + 120
    while _get(f"{server.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the inference process did not come back"
        time.sleep(0.2)
    assert victim not in _inference(server)
    page = _get(f"{server.url}/metrics").text
    assert metric(page, "emostream_local_restarts_total", role="inference") == 1


def test_processes_with_a_redis_broker_is_refused_with_the_reason() -> None:
    env = base_env(EMOSTREAM_BROKER="redis://127.0.0.1:1/0")
    done = subprocess.run(
        [*EMOSTREAM, "serve", "--processes", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--processes 1" in done.stderr
