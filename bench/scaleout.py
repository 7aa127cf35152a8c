"""``emostream bench stream --broker redis://… --workers 1,2,3``: the Redis hop, measured.

The same clients and clip as ``bench stream`` (see stream.py), in the same private network
namespace, against ``emostream serve --broker redis://…`` with 1, 2, 3 … separate
``emostream worker`` processes, and, for comparison, against the embedded broker at the
same client counts. The bench starts its own ``redis-server`` inside the namespace on the
URL's port (a namespace cannot reach a Redis outside it, and a benchmark must not touch a
production one), so the URL's host must be loopback.
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from emostream.bench import procs
from emostream.bench.report import Section
from emostream.bench.stream import (
    RunResult,
    attempt,
    bench_env,
    one_run,
    rerun_in_netns,
    the_clip,
)

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


def redis_run(n: int, workers: int, port: int, clip: Path, seconds: float, logs: Path) -> RunResult:
    """``n`` clients on a server with the Redis broker and ``workers`` worker processes, all
    started here, with a redis-server of its own."""
    redis = procs.RedisServer(logs / f"redis-{n}-{workers}", port=port).start()
    assert redis.proc is not None
    started: list[procs.Worker] = []
    try:
        for i in range(workers):
            name = f"bench-{i}"
            started.append(
                procs.Worker(
                    redis.url, logs, name, environ=bench_env(), EMOSTREAM_LOG_LEVEL="warning"
                )
            )
        r0 = procs.cpu_seconds(redis.proc.pid)
        helpers = [redis.proc.pid, *(w.pid for w in started)]
        result = one_run(n, clip, seconds, logs, {"EMOSTREAM_BROKER": redis.url}, helpers)
        result.redis_cpu_s = procs.cpu_seconds(redis.proc.pid) - r0
        return result
    finally:
        for w in started:
            w.proc.terminate()  # all at once, then wait for each
        for w in started:
            w.stop(20)
        redis.stop()


def render(rows_in: list[tuple[str, RunResult]], section: Section) -> Section:
    header = ["broker", "clients", "results/s", "p50 ms", "p95 ms", "p99 ms", "drops"]
    header += ["drop reasons", "ingest CPU %", "workers + Redis CPU %", "Redis CPU %"]
    rows: list[list[object]] = []
    for label, r in rows_in:
        if r.error:
            rows.append([label, r.clients, "failed", "-", "-", "-", "-", r.error, "-", "-", "-"])
            continue
        redis = label != "memory"
        rows.append(
            [
                label,
                r.clients,
                f"{r.messages / r.seconds:.1f}",
                *r.latency_cells(),
                f"{100 * r.server_cpu_s / r.seconds:.0f}",
                f"{100 * r.helper_cpu_s / r.seconds:.0f}" if redis else "-",
                f"{100 * r.redis_cpu_s / r.seconds:.0f}" if redis else "-",
            ]
        )
    hop = []
    for label, r in rows_in:
        base = next((b for lb, b in rows_in if lb == "memory" and b.clients == r.clients), None)
        if label == "memory" or base is None or r.error or base.error:
            continue
        hop.append(
            f"{label} at N = {r.clients}: p50 {r.pct(50) - base.pct(50):+.1f} ms, "
            f"p99 {r.pct(99) - base.pct(99):+.1f} ms"
        )
    section.measured().machine(
        "- Same clients, clip and namespace as the stream bench above. `memory`: "
        "`emostream serve` with the embedded broker; `redis xW`: `emostream serve "
        "--broker redis://127.0.0.1:…` plus W `emostream worker` processes and one "
        "redis-server, all on this machine. Payload: JPEG quality 90 of the frame "
        "downscaled to ≤ 640 px (see docs/ARCHITECTURE.md for its size).",
        "- Latency: the server-side `latency_ms` of every message (decode start to send, "
        "so for Redis it includes JPEG encode, XADD, the worker's read and decode, the "
        "result XADD and the ingest's XREAD). Results/s: messages received per second "
        "over all clients. CPU: per process, over the measuring window, % of one core.",
    )
    return section.table(header, rows).add(
        "Added latency of the Redis hop against the embedded broker (same client count): "
        + ("; ".join(hop) if hop else "not measured")
        + "."
    )


def run_inside(
    clients: list[int], workers: list[int], port: int, seconds: float, out: Path, command: str
) -> str:
    """The memory rows, then every worker count at every client count, in the namespace
    :func:`run` made; writes and returns the section."""
    section = Section(SECTION, command, out)
    clip = the_clip()
    plan: list[tuple[str, int, int]] = [("memory", n, 0) for n in clients]
    plan += [(f"redis x{w}", n, w) for n in clients for w in workers]
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp:
        logs = Path(tmp)
        rows = [
            (
                label,
                attempt(
                    f"{label}, ",
                    n,
                    seconds,
                    partial(redis_run, n, w, port, clip, seconds, logs)
                    if w
                    else partial(one_run, n, clip, seconds, logs),
                ),
            )
            for label, n, w in plan
        ]
    return render(rows, section).write()


def run(clients: list[int], workers: list[int], broker: str, seconds: float, out: Path) -> str:
    """Re-run inside a fresh private network namespace (as bench stream does), then report."""
    port = check_redis_url(broker)
    if procs.REDIS_SERVER is None:
        raise SystemExit("bench stream --broker redis needs redis-server (Debian redis-server)")
    c, w = ",".join(map(str, clients)), ",".join(map(str, workers))
    command = f"emostream bench stream --broker {broker} --workers {w} --clients {c}"
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
