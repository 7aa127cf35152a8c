"""``emostream bench stream --processes 1,2 --runs R``: one client load over server layouts.

The same clients as ``bench stream`` (or ``--audio``) against ``serve --processes P`` for
each P, every (P, clients) point ``R`` times, each run a fresh server. The runs go round
by round (run 1 of every point, then run 2, …) so that a change in the shared machine's
speed during the hour hits every layout alike. Besides latency and drops, each row says
how busy the whole machine was (/proc/stat), which is what tells a CPU limit (all cores
busy) from a serial stage (cores idle, yet frames late). Its own section of
docs/BENCHMARKS.md, so the one-process sections stay as they are.
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from emostream.bench.report import Section, usable_cores
from emostream.bench.stream import RunResult, attempt, inside_ip, rerun_in_netns

PROCESSES_ENV = "EMOSTREAM_LOCAL__PROCESSES"
DROPS = 0.02  # a run meets the bar under 2 % drops (and p99 under the kind's goal)
BUSY = 0.9  # the machine at or above this share of its cores: the CPU is the limit
PROJECTED_CORES = (16, 64)


@dataclass(frozen=True)
class Kind:
    """What differs between the video and the audio-only bench: the bar a run must meet
    and the goals, as runs out of five that must meet it at a number of clients."""

    name: str  # "video" or "audio", the module's command-line argument
    unit: str  # "streams", "audio-only calls"
    one: str  # "stream", "call"
    heading: str
    goal_ms: float
    goals: Mapping[int, int]  # clients -> runs of 5 that must meet the bar
    input_header: str


VIDEO = Kind(
    "video",
    "streams",
    "stream",
    "Stream over processes (emostream bench stream --processes)",
    100.0,
    {16: 5, 24: 4},
    "input fps per client",
)
AUDIO = Kind(
    "audio",
    "audio-only calls",
    "call",
    "Stream over processes, audio-only calls (emostream bench stream --audio --processes)",
    200.0,
    {},
    "speech windows/s per call",
)
KINDS = {k.name: k for k in (VIDEO, AUDIO)}


@dataclass(frozen=True)
class Point:
    """One run of one (processes, clients) point."""

    processes: int
    run: int  # 1-based
    result: RunResult


def plan(processes: Sequence[int], clients: Sequence[int], runs: int) -> list[tuple[int, int, int]]:
    """(run, processes, clients) in the order they are measured: round by round."""
    return [(r, p, n) for r in range(1, runs + 1) for p in processes for n in clients]


def met(r: RunResult, kind: Kind) -> bool:
    """Whether a run held: p99 under the kind's goal and under 2 % drops (a failed run
    did not)."""
    return (
        not r.error and bool(r.latencies_ms) and r.pct(99) < kind.goal_ms and (r.drop_rate < DROPS)
    )


def needed(of_five: int, runs: int) -> int:
    """Runs that must meet the bar out of ``runs`` for a goal of ``of_five`` out of 5."""
    return math.ceil(runs * of_five / 5)


def percent(seconds: float, r: RunResult) -> float:
    """CPU seconds over the measuring window, 100 % = one core."""
    return 100 * seconds / r.seconds


def mean_percent(results: Sequence[RunResult], attr: str) -> float:
    """The mean over ``results`` of one of their CPU-seconds fields, as :func:`percent`."""
    return sum(percent(float(getattr(r, attr)), r) for r in results) / len(results)


def render(points: Sequence[Point], kind: Kind, section: Section, setup: Sequence[str]) -> Section:
    cores = usable_cores()
    header = ["processes", kind.unit, "run", kind.input_header, "messages", "p50 ms"]
    header += ["p95 ms", "p99 ms", "drops", "drop reasons", f"server CPU % per {kind.one}"]
    header += ["server CPU % total", "clients' CPU %", f"machine busy % (of {100 * cores})"]
    rows: list[list[object]] = []
    for pt in points:
        r = pt.result
        if r.error:
            failed: list[object] = [pt.processes, r.clients, pt.run, "-", "failed"]
            rows.append(failed + ["-"] * 4 + [r.error] + ["-"] * 4)
            continue
        rows.append(
            [
                pt.processes,
                r.clients,
                pt.run,
                f"{r.frames_in / r.seconds / r.clients:.1f}",
                r.messages,
                *r.latency_cells(),
                f"{percent(r.server_cpu_s, r) / r.clients:.1f}",
                f"{percent(r.server_cpu_s, r):.0f}",
                f"{percent(r.client_cpu_s, r):.0f}",
                f"{percent(r.machine_cpu_s, r):.0f}",
            ]
        )
    runs = max((pt.run for pt in points), default=0)
    section.measured().machine(
        *setup,
        f"- Each (processes, {kind.unit}) point {runs} time(s), each run a fresh server with "
        f"`{PROCESSES_ENV}` = processes (inference processes: the default), the runs "
        "round by round so that the machine's drift hits every layout alike. CPU: 100 % "
        "is one core; server: the serve process and its children; machine busy: every "
        "process of the machine (/proc/stat), clients and the rest included.",
    )
    return section.table(header, rows).add(reading(points, kind, cores))


def reading(points: Sequence[Point], kind: Kind, cores: int) -> str:
    """Per number of processes: the runs that met the bar at each load against the goals,
    what limited the largest load, and the CPU per stream with a linear projection; all
    computed from the rows."""
    bar = f"p99 < {kind.goal_ms:.0f} ms and < {100 * DROPS:g} % drops"
    runs = max((pt.run for pt in points), default=0)
    text = [f"A run met the bar with {bar}."]
    if kind.goals and runs < 5:
        text.append(f"The goals are over 5 runs; these are over {runs}, scaled.")
    for p in sorted({pt.processes for pt in points}):
        mine = [pt.result for pt in points if pt.processes == p]
        text.append(f"**{p} process{'es' if p > 1 else ''}:** " + by_load(mine, kind, runs))
        text.append(limit(mine, kind, cores))
        text.append(projection(mine, kind, runs))
    return " ".join(t for t in text if t)


def by_load(results: Sequence[RunResult], kind: Kind, runs: int) -> str:
    """ "16 streams: 5 of 5 runs met (goal 5 of 5: met); …" for every load measured."""
    parts = []
    for n in sorted({r.clients for r in results}):
        ok = sum(met(r, kind) for r in results if r.clients == n)
        part = f"{n} {kind.unit}: {ok} of {runs} runs met"
        if n in kind.goals:
            need = needed(kind.goals[n], runs)
            part += f" (goal {need} of {runs}: {'met' if ok >= need else 'missed'})"
        parts.append(part)
    return "; ".join(parts) + "."


def limit(results: Sequence[RunResult], kind: Kind, cores: int) -> str:
    """What limited the largest load, from the machine's CPU over its runs (means)."""
    top = max(r.clients for r in results)
    tried = [r for r in results if r.clients == top]
    done = [r for r in tried if not r.error]
    failed = f" {len(tried) - len(done)} of {len(tried)} runs failed (see the table)."
    if not done:
        return f"At {top} {kind.unit} every run failed."
    note = failed if len(done) < len(tried) else ""
    machine, server, clients = (
        mean_percent(done, attr) for attr in ("machine_cpu_s", "server_cpu_s", "client_cpu_s")
    )
    where = (
        f"the machine {machine:.0f} % busy of its {100 * cores} % (server {server:.0f} %, "
        f"clients {clients:.0f} %, the rest {max(0.0, machine - server - clients):.0f} %)"
    )
    if machine >= BUSY * 100 * cores:
        return f"At {top} {kind.unit} the limit is the CPU: {where}.{note}"
    if not all(met(r, kind) for r in done):
        return (
            f"At {top} {kind.unit} runs missed with {where}, cores to spare: a serial stage "
            f"is the limit, not the CPU.{note}"
        )
    return f"At {top} {kind.unit} every run that ran held, with {where}.{note}"


def projection(results: Sequence[RunResult], kind: Kind, runs: int) -> str:
    """Server CPU per stream at the largest load that held in 4 of 5 runs (or the fewest
    clients when none held), and streams per machine of more cores at that cost."""
    loads = sorted({r.clients for r in results})
    held = [
        n for n in loads if sum(met(r, kind) for r in results if r.clients == n) >= needed(4, runs)
    ]
    n = max(held) if held else loads[0]
    done = [r for r in results if r.clients == n and not r.error and r.clients]
    if not done:
        return ""
    per = sum(percent(r.server_cpu_s, r) / r.clients for r in done) / len(done)
    why = (
        f"the largest that held in {needed(4, runs)} of {runs} runs"
        if held
        else "none held; the fewest measured"
    )
    text = f"Server CPU per {kind.one} at {n} {kind.unit} ({why}): {per:.1f} % of one core"
    if per <= 0:
        return text + "."
    guess = ", ".join(f"{math.floor(c * 100 / per)} on {c} cores" for c in PROJECTED_CORES)
    return text + f"; linear projection (cores x 100 % / that), not a measurement: {guess}."


Runner = Callable[[int, Mapping[str, str]], RunResult]


def measure(
    processes: Sequence[int], clients: Sequence[int], runs: int, seconds: float, one: Runner
) -> list[Point]:
    """Every point of :func:`plan`, ``one(clients, env)`` a fresh server each time."""
    points = []
    for r, p, n in plan(processes, clients, runs):
        env = {PROCESSES_ENV: str(p)}
        label = f"{p} process(es), run {r} of {runs}: "
        points.append(Point(p, r, attempt(label, n, seconds, partial(one, n, env))))
    return points


def run_inside(
    kind: Kind,
    processes: list[int],
    clients: list[int],
    runs: int,
    seconds: float,
    out: Path,
    command: str,
) -> str:
    """The runs, inside the namespace :func:`run` made; writes and returns the section."""
    inside_ip()
    section = Section(kind.heading, command, out)
    server = "`emostream serve --processes P`"
    with tempfile.TemporaryDirectory(prefix="emostream-bench-procs-") as logs:
        if kind is AUDIO:
            from emostream.bench import stream_audio

            loop = stream_audio.the_loop()
            setup = [stream_audio.setup(server), stream_audio.LATENCY]

            def one(n: int, env: Mapping[str, str]) -> RunResult:
                return stream_audio.one_run(n, loop, seconds, Path(logs), env)
        else:
            from emostream.bench import stream

            clip = stream.the_clip()
            setup = stream.setup_lines(server)

            def one(n: int, env: Mapping[str, str]) -> RunResult:
                return stream.one_run(n, clip, seconds, Path(logs), env)

        points = measure(processes, clients, runs, seconds, one)
    return render(points, kind, section, setup).write()


def command_line(
    kind: Kind, processes: list[int], clients: list[int], runs: int, seconds: float
) -> str:
    audio = " --audio" if kind is AUDIO else ""
    return (
        f"emostream bench stream{audio} --processes {','.join(map(str, processes))} "
        f"--clients {','.join(map(str, clients))} --runs {runs} --seconds {seconds:g}"
    )


def run(
    kind: Kind,
    processes: list[int],
    clients: list[int],
    runs: int = 1,
    seconds: float = 20.0,
    out: Path = Path("docs/BENCHMARKS.md"),
) -> str:
    """Re-run this benchmark inside a fresh private network namespace, then report."""
    args = [kind.name, ",".join(map(str, processes)), ",".join(map(str, clients))]
    args += [str(runs), str(seconds), str(out.resolve())]
    return rerun_in_netns("emostream.bench.stream_procs", args, out, kind.heading)


if __name__ == "__main__":
    k = KINDS[sys.argv[1]]
    ps, ns = ([int(x) for x in a.split(",")] for a in sys.argv[2:4])
    r_, s_ = int(sys.argv[4]), float(sys.argv[5])
    run_inside(k, ps, ns, r_, s_, Path(sys.argv[6]), command_line(k, ps, ns, r_, s_))
