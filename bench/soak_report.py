"""What ``emostream bench soak`` measured, and what it says: samples, growth, goals, section.

The samples are plain lists (``COLUMNS``) so that the results JSON is the data itself.
Growth after warm-up is the median resident memory over the last window of the loop minus
the median over the first window after warm-up (a window is 10 % of that span, at most a
minute), so one garbage-collection spike does not decide it; the trend is the
least-squares slope over the same span. "Nothing left" compares the final sample, taken
after the last session ended and the idle timeout passed, with the idle sample taken after
warm-up: what the process starts on first use and keeps (thread pools, the Redis results
reader and its connection) is there in both, so only what sessions leave shows. The
start, before the first session, is reported beside them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median

import numpy as np

from emostream.bench.report import Section, charts

#: One sample of one process: seconds since its broker's run started, resident MB, threads,
#: open file descriptors, asyncio tasks (NaN for a process without /metrics: redis-server).
COLUMNS = ("t", "rss_mb", "threads", "fds", "tasks")
GOAL_MB = 20.0
WARMUP_FRACTION = 0.1
MAX_WINDOW_S = 60.0


@dataclass
class Series:
    """The samples of one process (``serve``, ``worker``, ``redis-server``)."""

    name: str
    rows: list[list[float]] = field(default_factory=list)
    goal: bool = True  # held to the goals (emostream's own processes)

    def column(self, name: str) -> list[float]:
        i = COLUMNS.index(name)
        return [r[i] for r in self.rows]


@dataclass
class SessionRecord:
    started: float
    seconds: float
    ending: str
    messages: int = 0
    error: str | None = None


@dataclass
class BrokerRun:
    """One broker's soak: its processes' samples, the server's open sessions, the sessions."""

    broker: str
    checkpoint: float = 0.0  # the idle sample after warm-up
    warmup_end: float = 0.0  # the loop resumes
    load_end: float = 0.0  # the last session over, on the client's side
    idle_timeout_s: float = 0.0
    processes: list[Series] = field(default_factory=list)
    active: list[list[float]] = field(default_factory=list)  # [t, sessions open]
    sessions: list[SessionRecord] = field(default_factory=list)

    def ended(self, ending: str) -> int:
        return sum(1 for s in self.sessions if s.error is None and s.ending == ending)

    @property
    def failed(self) -> list[SessionRecord]:
        """Sessions that could not connect, or got no message at all."""
        return [s for s in self.sessions if s.error is not None or s.messages == 0]

    @property
    def final_sessions(self) -> float:
        return self.active[-1][1] if self.active else math.nan


def level(rows: list[list[float]], col: int, start: float, end: float) -> float:
    """Median of column ``col`` over samples with ``start <= t <= end``; the nearest
    sample's value when the window holds none."""
    inside = [r[col] for r in rows if start <= r[0] <= end]
    if inside:
        return float(median(inside))
    if not rows:
        return math.nan
    mid = (start + end) / 2
    return float(min(rows, key=lambda r: abs(r[0] - mid))[col])


def window_s(warmup_end: float, load_end: float) -> float:
    return min(MAX_WINDOW_S, WARMUP_FRACTION * max(0.0, load_end - warmup_end))


def growth_mb(rows: list[list[float]], warmup_end: float, load_end: float) -> float:
    """Resident MB at the end of the loop minus right after warm-up (medians of a window)."""
    w = window_s(warmup_end, load_end)
    rss = COLUMNS.index("rss_mb")
    return level(rows, rss, load_end - w, load_end) - level(rows, rss, warmup_end, warmup_end + w)


def trend_mb_per_hour(rows: list[list[float]], warmup_end: float, load_end: float) -> float:
    """Least-squares slope of resident MB from warm-up to the end of the loop, per hour."""
    pts = [(r[0], r[1]) for r in rows if warmup_end <= r[0] <= load_end]
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return math.nan
    t, v = np.array(pts).T
    return float(np.polyfit(t, v, 1)[0] * 3600)


def at(rows: list[list[float]], t: float) -> list[float]:
    """The sample taken at (or nearest to) time ``t``."""
    return min(rows, key=lambda r: abs(r[0] - t))


def left_over(series: Series, checkpoint: float) -> dict[str, tuple[float, float]]:
    """Threads, fds and tasks the final sample holds above the idle sample at
    ``checkpoint``, as (idle after warm-up, final)."""
    if len(series.rows) < 2:
        return {}
    ref, last = at(series.rows, checkpoint), series.rows[-1]
    out = {}
    for name in ("threads", "fds", "tasks"):
        i = COLUMNS.index(name)
        if not math.isnan(ref[i]) and last[i] > ref[i]:
            out[name] = (ref[i], last[i])
    return out


@dataclass
class Verdict:
    growth_ok: bool
    clean_ok: bool
    lines: list[str]


def verdict(runs: list[BrokerRun]) -> Verdict:
    """The two goals, over every broker and every process held to them."""
    growth_ok = clean_ok = True
    grew, left = [], []
    for run in runs:
        for s in (s for s in run.processes if s.goal):
            g = growth_mb(s.rows, run.warmup_end, run.load_end)
            grew.append(f"{run.broker} {s.name} {g:+.1f} MB")
            growth_ok &= g < GOAL_MB
            extra = left_over(s, run.checkpoint)
            left += [f"{run.broker} {s.name} {k} {b:.0f} → {f:.0f}" for k, (b, f) in extra.items()]
            clean_ok &= not extra
        if run.final_sessions != 0:
            clean_ok = False
            left.append(f"{run.broker}: {run.final_sessions:.0f} sessions still open")
    return Verdict(
        growth_ok,
        clean_ok,
        [
            f"Growth after warm-up under {GOAL_MB:.0f} MB: "
            f"{'met' if growth_ok else 'missed'} ({', '.join(grew)}).",
            "Nothing left after the last session (sessions 0; threads, fds and tasks back "
            f"to the idle after warm-up): {'met' if clean_ok else 'missed'}"
            + (f" ({'; '.join(left)})." if left else "."),
        ],
    )


def results_json(runs: list[BrokerRun], meta: dict[str, object]) -> dict[str, object]:
    return {"columns": list(COLUMNS), **meta, "runs": [asdict(r) for r in runs]}


PANELS = {"rss_mb": "resident MB", "threads": "threads", "fds": "open fds"}
PANELS |= {"tasks": "asyncio tasks", "sessions": "sessions open (server)"}


def draw(runs: list[BrokerRun], path: Path, title: str) -> Path:
    """One figure: a column per broker, a row per resource, a line per process; warm-up
    shaded grey, the wait after the last session shaded green."""
    with charts(path, title, (5.5 * len(runs), 10.5), len(PANELS), len(runs)) as axes:
        for col, run in enumerate(runs):
            for row, (key, label) in enumerate(PANELS.items()):
                ax = axes[row][col]
                if key == "sessions":
                    ts = [r[0] / 60 for r in run.active]
                    ax.step(ts, [r[1] for r in run.active], where="post", color="tab:purple")
                else:
                    for s in run.processes:
                        values = s.column(key)
                        if not all(math.isnan(v) for v in values):
                            ax.plot([t / 60 for t in s.column("t")], values, label=s.name)
                ax.axvspan(0, run.warmup_end / 60, color="grey", alpha=0.2, lw=0)
                end = max((r[0] for s in run.processes for r in s.rows), default=run.load_end)
                ax.axvspan(run.load_end / 60, end / 60, color="tab:green", alpha=0.12, lw=0)
                ax.set_ylabel(label, fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
                if row == 0:
                    ax.set_title(f"{run.broker} broker", fontsize=9)
                    ax.legend(fontsize=7, loc="lower right")
                if row == len(PANELS) - 1:
                    ax.set_xlabel("minutes", fontsize=8)
    return path


def _ends(s: Series, name: str, checkpoint: float) -> str:
    """``start / idle after warm-up / final``."""
    i = COLUMNS.index(name)
    if not s.rows or math.isnan(s.rows[0][i]):
        return "-"
    return " / ".join(f"{r[i]:.0f}" for r in (s.rows[0], at(s.rows, checkpoint), s.rows[-1]))


def render(runs: list[BrokerRun], section: Section, figure: Path, setup: list[str]) -> Section:
    """The section: when, where, how; the sessions; each process's resources; the goals."""
    sessions = []
    for r in runs:
        sessions.append(
            [
                r.broker,
                len(r.sessions),
                r.ended("delete"),
                r.ended("hangup"),
                r.ended("vanish"),
                len(r.failed),
                sum(s.messages for s in r.sessions),
                f"{r.final_sessions:.0f}",
            ]
        )
    rows: list[list[object]] = []
    rss = COLUMNS.index("rss_mb")
    for r in runs:
        w = window_s(r.warmup_end, r.load_end)
        for s in r.processes:
            idle, final = at(s.rows, r.checkpoint)[rss], s.rows[-1][rss]
            rows.append(
                [
                    r.broker,
                    s.name,
                    f"{s.rows[0][rss]:.0f} / {idle:.0f} / {final:.0f}",
                    f"{level(s.rows, rss, r.warmup_end, r.warmup_end + w):.0f}",
                    f"{level(s.rows, rss, r.load_end - w, r.load_end):.0f}",
                    f"{growth_mb(s.rows, r.warmup_end, r.load_end):+.1f}",
                    f"{trend_mb_per_hour(s.rows, r.warmup_end, r.load_end):+.1f}",
                    f"{final - idle:+.1f}",
                    _ends(s, "threads", r.checkpoint),
                    _ends(s, "fds", r.checkpoint),
                    _ends(s, "tasks", r.checkpoint),
                ]
            )
    head = ["broker", "sessions", "ended by DELETE", "hung up", "vanished", "failed"]
    head += ["messages", "open at the end"]
    res = ["broker", "process", "RSS MB idle: start / after warm-up / final"]
    res += ["RSS MB loaded: after warm-up", "end of loop", "growth after warm-up MB"]
    res += ["trend MB/h", "idle growth MB (final - after warm-up)"]
    res += ["threads", "fds", "tasks"]
    v = verdict(runs)
    section.measured().machine(*setup).table(head, sessions)
    section.add("Each process (threads, fds, tasks: start / idle after warm-up / final):")
    section.table(res, rows, "ll" + "r" * 9)
    return section.figure("soak: resources over time", figure).add(" ".join(v.lines))
