"""``emostream bench stream --broker redis://… --workers 1,2,3``: the Redis hop, measured.

The same clients and clip as ``bench stream`` (see stream.py), in the same private network
namespace, against ``emostream serve --broker redis://…`` with 1, 2, 3 … separate
``emostream worker`` processes, and, for comparison, against the embedded broker at the
same client counts. The bench starts its own ``redis-server`` inside the namespace on the
URL's port (a namespace cannot reach a Redis outside it, and a benchmark must not touch a
production one), so the URL's host must be loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

from emostream.bench.report import machine_lines, md_table, write_section
from emostream.bench.stream import (
    ENV_INSIDE,
    RunResult,
    _cpu_seconds,
    _one_run,
    prepare_clip,
    rerun_in_netns,
)
from emostream.paths import data_root

SECTION = "Stream over Redis (emostream bench stream --broker redis://… --workers)"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_redis_url(url: str) -> int:
    """The port to run the bench's own redis-server on; refuses non-loopback hosts."""
    parsed = urlparse(url)
    if parsed.scheme != "redis" or (parsed.hostname or "127.0.0.1") not in LOOPBACK:
        raise ValueError(
            f"--broker {url!r}: the bench runs its own redis-server in a private namespace; "
            "give redis://127.0.0.1:PORT/0"
        )
    return parsed.port or 6379


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def _redis_run(
    n: int, workers: int, port: int, clip: Path, seconds: float
) -> tuple[RunResult, float]:
    """Returns the run and the redis-server's share of the helper CPU seconds."""
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("bench stream --broker redis needs redis-server (Debian redis-server)")
    url = f"redis://127.0.0.1:{port}/0"
    env = {k: v for k, v in os.environ.items() if k != ENV_INSIDE}
    redis = _start(
        [redis_bin, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        env,
    )
    procs = [redis]
    try:
        emostream = str(Path(sys.executable).parent / "emostream")
        for i in range(workers):
            mport = 19100 + i
            w = _start(
                [emostream, "worker", "--broker", url, "--metrics-port", str(mport)],
                {**env, "EMOSTREAM_WORKER_NAME": f"bench-{i}", "EMOSTREAM_LOG_LEVEL": "warning"},
            )
            procs.append(w)
            _wait_http(f"http://127.0.0.1:{mport}/metrics", w)
        r0 = _cpu_seconds(redis.pid)
        result = asyncio.run(
            _one_run(
                n,
                clip,
                seconds,
                warmup=3.0,
                env_extra={"EMOSTREAM_BROKER": url},
                helpers=[p.pid for p in procs],
            )
        )
        return result, _cpu_seconds(redis.pid) - r0
    finally:
        _stop(procs[1:])
        _stop(procs[:1])


def render(
    rows_in: list[tuple[str, RunResult, float]], started: datetime, wall_s: float, command: str
) -> str:
    header = [
        "broker",
        "clients",
        "results/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "drops",
        "drop reasons",
        "ingest CPU %",
        "workers + Redis CPU %",
        "Redis CPU %",
    ]
    rows = []
    for label, r, redis_cpu in rows_in:
        if r.error:
            rows.append([label, r.clients, "failed", "-", "-", "-", "-", r.error, "-", "-", "-"])
            continue
        reasons = ", ".join(f"{k} {int(v)}" for k, v in sorted(r.dropped.items())) or "-"
        rows.append(
            [
                label,
                r.clients,
                f"{r.messages / r.seconds:.1f}",
                f"{r.pct(50):.1f}",
                f"{r.pct(95):.1f}",
                f"{r.pct(99):.1f}",
                f"{r.drop_rate:.2%}",
                reasons,
                f"{100 * r.server_cpu_s / r.seconds:.0f}",
                f"{100 * r.helper_cpu_s / r.seconds:.0f}" if label != "memory" else "-",
                f"{100 * redis_cpu / r.seconds:.0f}" if label != "memory" else "-",
            ]
        )
    hop = []
    for label, r, _ in rows_in:
        base = next((b for lb, b, _ in rows_in if lb == "memory" and b.clients == r.clients), None)
        if label == "memory" or base is None or r.error or base.error:
            continue
        hop.append(
            f"{label} at N = {r.clients}: p50 {r.pct(50) - base.pct(50):+.1f} ms, "
            f"p99 {r.pct(99) - base.pct(99):+.1f} ms"
        )
    return "\n".join(
        [
            f"## {SECTION}",
            "",
            f"Measured {started:%Y-%m-%d %H:%M} UTC with `{command}` (the whole run took "
            f"{wall_s:.0f} s).",
            "",
            *machine_lines(),
            "- Same clients, clip and namespace as the stream bench above. `memory`: "
            "`emostream serve` with the embedded broker; `redis xW`: `emostream serve "
            "--broker redis://127.0.0.1:…` plus W `emostream worker` processes and one "
            "redis-server, all on this machine. Payload: JPEG quality 90 of the frame "
            "downscaled to ≤ 640 px (see docs/ARCHITECTURE.md for its size).",
            "- Latency: the server-side `latency_ms` of every message (decode start to send, "
            "so for Redis it includes JPEG encode, XADD, the worker's read and decode, the "
            "result XADD and the ingest's XREAD). Results/s: messages received per second "
            "over all clients. CPU: per process, over the measuring window, % of one core.",
            "",
            md_table(header, rows),
            "",
            "Added latency of the Redis hop against the embedded broker (same client count): "
            + ("; ".join(hop) if hop else "not measured")
            + ".",
            "",
        ]
    )


def run_inside(
    clients: list[int], workers: list[int], port: int, seconds: float, out: Path, command: str
) -> str:
    root = data_root()
    if root is None or not (root / "media" / "woman2.mp4").is_file():
        raise SystemExit("bench stream needs media/woman2.mp4 (set EMOSTREAM_DATA)")
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    clip = prepare_clip(root / "media" / "woman2.mp4")
    rows: list[tuple[str, RunResult, float]] = []
    plan: list[tuple[str, int, int]] = [("memory", n, 0) for n in clients]
    plan += [(f"redis x{w}", n, w) for n in clients for w in workers]
    for label, n, w in plan:
        print(f"bench stream: {label}, {n} client(s), {seconds:.0f} s …", file=sys.stderr)
        redis_cpu = 0.0
        try:
            if w == 0:
                r = asyncio.run(_one_run(n, clip, seconds, warmup=3.0))
            else:
                r, redis_cpu = _redis_run(n, w, port, clip, seconds)
        except Exception as exc:  # report the row as failed, keep the others
            print(f"  failed: {exc!r}", file=sys.stderr)
            r = RunResult(n, seconds, error=repr(exc)[:120])
        print(
            f"  {r.messages / seconds:.1f} results/s, p50 {r.pct(50):.1f} ms, "
            f"p99 {r.pct(99):.1f} ms, drops {r.drop_rate:.2%}",
            file=sys.stderr,
            flush=True,
        )
        rows.append((label, r, redis_cpu))
    section = render(rows, started, time.perf_counter() - t0, command)
    write_section(out, SECTION, section)
    return section


def run(clients: list[int], workers: list[int], broker: str, seconds: float, out: Path) -> str:
    """Re-run inside a fresh private network namespace (as bench stream does), then report."""
    port = check_redis_url(broker)
    c, w = ",".join(map(str, clients)), ",".join(map(str, workers))
    command = f"emostream bench stream --broker {broker} --workers {w} --clients {c}"
    if os.environ.get(ENV_INSIDE) == "1":
        return run_inside(clients, workers, port, seconds, out, command)
    args = [c, w, str(port), str(seconds), str(out.resolve()), command]
    return rerun_in_netns("emostream.bench.scaleout", args, out, SECTION)


if __name__ == "__main__":
    run_inside(
        [int(x) for x in sys.argv[1].split(",")],
        [int(x) for x in sys.argv[2].split(",")],
        int(sys.argv[3]),
        float(sys.argv[4]),
        Path(sys.argv[5]),
        sys.argv[6],
    )
