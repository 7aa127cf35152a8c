"""``emostream bench soak``: sessions opened, streamed and closed for N minutes; leaks drawn.

For each broker, the processes a deployment runs (``memory``: one all-in-one ``emostream
serve``; ``redis``: a redis-server, ``emostream serve --broker redis://…`` and one
``emostream worker``) serve K sessions at once, for ``--minutes``. Each session is a
client process of its own (``soak_client``) that streams the shared woman2.mp4, small and
slow (320x240 at 5 fps: the soak is about leaks, so the server must never saturate), for
a seeded random 5-20 s, then ends in one of the ways real clients end: ``DELETE``, a
closed peer connection, or a ``SIGKILL`` that leaves the server to its idle timeout.
Every ``--interval`` seconds the bench reads each process's resident memory, threads and
file descriptors from /proc, and its asyncio tasks and open sessions from its /metrics.
The loop pauses once, after the warm-up: every session ends, the idle timeout passes and
an idle sample is taken (by then the pools that grow on first use have grown); after the
last session the same wait gives the final sample. Everything runs in a private network
namespace, like ``bench stream``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Never

import httpx
from tqdm import tqdm

from emostream.bench import netns, procs
from emostream.bench.measure import VIDEO, say
from emostream.bench.report import Section, read_section
from emostream.bench.soak_report import (
    WARMUP_FRACTION,
    BrokerRun,
    Series,
    SessionRecord,
    draw,
    render,
    results_json,
    verdict,
)
from emostream.bench.stream import bench_env, inside_ip, the_clip

SECTION = "Soak (emostream bench soak)"
WIDTH, HEIGHT, FPS = 320, 240, 5
SESSION_S = (5.0, 20.0)
#: How sessions end, with their weights: half say goodbye, a quarter each do not.
ENDINGS: dict[str, float] = {"delete": 2, "hangup": 1, "vanish": 1}
BROKERS = ("memory", "redis")
EXIT_SESSIONS_FAILED = 3  # the section is written; a session failed or got no message
CLIENT_GUARD_S = 90.0  # past its streaming time, a client that has not ended is killed
SETTLE_S = 3.0  # after the idle timeout: the reaper's period and a scrape


@dataclass(frozen=True)
class Plan:
    seconds: float
    ending: str


def plans(seed: int) -> Iterator[Plan]:
    """The sessions' lengths and endings, in the order they start (seeded, so repeatable)."""
    rng = random.Random(seed)
    names, weights = list(ENDINGS), list(ENDINGS.values())
    while True:
        yield Plan(round(rng.uniform(*SESSION_S), 1), rng.choices(names, weights)[0])


@dataclass
class Watched:
    """A process the bench samples, and its /metrics (None: /proc only)."""

    series: Series
    pid: int
    metrics_url: str | None


class Soak:
    """One broker's run: the loop of sessions, and the sampler beside it."""

    def __init__(self, run: BrokerRun, url: str, watched: list[Watched], clip: Path) -> None:
        self.run, self.url, self.watched, self.clip = run, url, watched, clip
        self.t0 = time.monotonic()
        self.http = httpx.AsyncClient(trust_env=False, timeout=10)
        self.lock = asyncio.Lock()
        self.paused = 0.0  # seconds spent waiting out idle timeouts

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def sample(self) -> float:
        """One row per process: /metrics first, then /proc, one scrape at a time (so the
        scrape's one connection is open in every sample alike); the sample's time."""
        async with self.lock:
            t = round(self.now(), 2)
            for w in self.watched:
                tasks = sessions = math.nan
                if w.metrics_url is not None:
                    try:
                        text = (await self.http.get(w.metrics_url)).text
                        tasks = procs.metric(text, "emostream_asyncio_tasks")
                        sessions = procs.metric(text, "emostream_active_sessions")
                    except httpx.HTTPError as exc:
                        say("bench soak", f"{w.series.name}: /metrics failed: {exc!r}")
                u = procs.usage(w.pid)
                w.series.rows.append([t, round(u.rss_mb, 2), u.threads, u.fds, tasks])
                if w.series.name == "serve":
                    self.run.active.append([t, sessions])
            return t

    async def sampler(self, interval: float, stop: asyncio.Event, bar: tqdm[Never]) -> None:
        while not stop.is_set():
            await self.sample()
            bar.n = min(int(bar.total or 0), int(self.now() - self.paused))
            rss = {w.series.name: f"{w.series.rows[-1][1]:.0f}" for w in self.watched}
            bar.set_postfix(sessions=len(self.run.sessions), rss_mb=rss, refresh=True)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def session(self, plan: Plan, seconds: float) -> None:
        """One client process; its messages, or why it failed."""
        record = SessionRecord(round(self.now(), 2), seconds, plan.ending)
        self.run.sessions.append(record)
        argv = [sys.executable, "-m", "emostream.bench.soak_client", self.url, str(self.clip)]
        proc = await asyncio.create_subprocess_exec(
            *argv, f"{seconds}", plan.ending, stdout=PIPE, stderr=PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), seconds + CLIENT_GUARD_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            record.error = "client did not end in time"
            return
        lines = out.decode().strip().splitlines()
        why = (err.decode().strip().splitlines() or [""])[-1][:200]
        reply = json.loads(lines[-1]) if lines else {"error": f"exit {proc.returncode}: {why}"}
        record.messages = int(reply.get("messages", 0))
        record.error = reply.get("error")

    async def sessions(self, k: int, plans: Iterator[Plan], seconds: float) -> None:
        """``k`` slots of sessions one after another for ``seconds`` (the last ones cut to
        fit), then until every session has ended."""
        until = self.now() + seconds

        async def slot() -> None:
            while (left := until - self.now()) >= SESSION_S[0]:
                plan = next(plans)
                await self.session(plan, min(plan.seconds, round(left, 1)))

        await asyncio.gather(*(slot() for _ in range(k)))

    async def idle(self, bar: tqdm[Never]) -> float:
        """Wait out the idle timeout (the vanished clients' sessions end), then sample
        until the server has no session open (or a guard passes: a session left open)."""
        t0 = self.now()
        bar.set_description(f"soak {self.run.broker} (waiting out the idle timeout)")
        await asyncio.sleep(self.run.idle_timeout_s + SETTLE_S)
        guard = self.now() + self.run.idle_timeout_s + CLIENT_GUARD_S
        while (t := await self.sample()) < guard and self.run.active[-1][1] != 0:
            await asyncio.sleep(1.0)
        bar.set_description(f"soak {self.run.broker}")
        self.paused += self.now() - t0
        return t

    async def main(self, minutes: float, k: int, seed: int, interval: float) -> None:
        """Baseline; warm-up; idle sample; the rest of the loop; final idle sample."""
        loop_s = minutes * 60
        warmup_s = warmup_seconds(loop_s)
        stop = asyncio.Event()
        with tqdm(total=int(loop_s), desc=f"soak {self.run.broker}", unit="s") as bar:
            await self.sample()  # the baseline, before any session
            sampler = asyncio.create_task(self.sampler(interval, stop, bar))
            sessions = plans(seed)
            await self.sessions(k, sessions, warmup_s)
            self.run.checkpoint = await self.idle(bar)
            self.run.warmup_end = round(self.now(), 2)
            await self.sessions(k, sessions, loop_s - warmup_s)
            self.run.load_end = round(self.now(), 2)
            await self.idle(bar)  # the final sample
            stop.set()
            await sampler
        await self.http.aclose()


def warmup_seconds(loop_s: float) -> float:
    """The warm-up: 10 % of the loop, at least 30 s, at most half of it."""
    return min(max(WARMUP_FRACTION * loop_s, 30.0), loop_s / 2)


def broker_run(
    broker: str, minutes: float, k: int, seed: int, interval: float, clip: Path, logs: Path
) -> BrokerRun:
    """Start ``broker``'s processes, soak them, stop them."""
    from emostream.settings import Settings

    run = BrokerRun(broker, idle_timeout_s=Settings().session.idle_timeout_s)
    env = bench_env()
    with ExitStack() as stack:
        watched = []
        serve_env: dict[str, str] = {}
        if broker == "redis":
            redis = procs.RedisServer(logs / "redis").start()
            stack.callback(redis.stop)
            assert redis.proc is not None
            worker = procs.Worker(
                redis.url, logs, "soak-0", environ=env, EMOSTREAM_LOG_LEVEL="warning"
            )
            stack.callback(worker.stop, 20)
            serve_env["EMOSTREAM_BROKER"] = redis.url
            watched.append(Watched(Series("worker"), worker.pid, worker.metrics_url))
            watched.append(Watched(Series("redis-server", goal=False), redis.proc.pid, None))
        server = procs.Server(inside_ip(), logs, environ=env, **serve_env)
        stack.callback(server.stop, 20)
        watched.insert(0, Watched(Series("serve"), server.pid, f"{server.url}/metrics"))
        run.processes = [w.series for w in watched]
        asyncio.run(Soak(run, server.url, watched, clip).main(minutes, k, seed, interval))
    return run


def setup_lines(k: int, interval: float, idle_s: float) -> list[str]:
    share = {name: f"{w / sum(ENDINGS.values()):.0%}" for name, w in ENDINGS.items()}
    return [
        f"- {k} sessions at once, each a client process of its own publishing {VIDEO} "
        f"letterboxed to {WIDTH}x{HEIGHT} at {FPS} fps (VP8, relayed without re-encoding) "
        f"for a seeded random {SESSION_S[0]:.0f}-{SESSION_S[1]:.0f} s, then ending by "
        f"`DELETE` ({share['delete']}), by closing its peer connection without `DELETE` "
        f"({share['hangup']}) or by `SIGKILL` ({share['vanish']}: the server finds out by "
        f"its idle timeout, {idle_s:.0f} s); all inside a private network namespace. "
        "`memory`: one "
        "`emostream serve` (embedded broker); `redis`: a redis-server, `emostream serve "
        "--broker redis://127.0.0.1:…` and one `emostream worker`; default settings.",
        f"- Every {interval:g} s: resident memory, threads and open fds of each process "
        "from /proc; asyncio tasks (`emostream_asyncio_tasks`) and open sessions "
        "(`emostream_active_sessions`) from its /metrics. *Start*: before the first "
        f"session. Warm-up (shaded grey): the first {WARMUP_FRACTION:.0%} of the loop (at "
        "least 30 s), then every session ends and the idle timeout passes: *idle after "
        "warm-up* is sampled there. *Growth after warm-up*: median RSS over the last "
        "window of the loop minus the median over the first window after warm-up (a "
        "window is 10 % of that span, at most 60 s); *trend*: the least-squares slope "
        "over the same span. *Final*: after the last session ended and the idle timeout "
        "passed (shaded green). Threads, fds and tasks must be back to *idle after "
        "warm-up*: what starts on first use and stays (thread pools; with Redis the "
        "results reader and its connection) is in both, so only what sessions leave shows.",
    ]


def run_inside(
    brokers: list[str],
    minutes: float,
    k: int,
    seed: int,
    interval: float,
    out: Path,
    command: str,
) -> int:
    """The soaks, inside the namespace :func:`run` made: writes the section, the figure and
    the results JSON beside ``out``; exit status :data:`EXIT_SESSIONS_FAILED` when a
    session failed or got no message."""
    inside_ip()
    section = Section(SECTION, command, out)
    clip = the_clip(WIDTH, HEIGHT, FPS)
    with tempfile.TemporaryDirectory(prefix="emostream-soak-") as tmp:
        runs = []
        for broker in brokers:
            say("bench soak", f"{broker}: {minutes:g} min, {k} sessions at once …")
            runs.append(broker_run(broker, minutes, k, seed, interval, clip, Path(tmp)))
    figure = draw(runs, out.parent / "soak.png", f"emostream bench soak, {minutes:g} min")
    meta: dict[str, object] = {"command": command}
    meta["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta |= {"sessions_at_once": k, "seed": seed, "interval_s": interval}
    data = results_json(runs, meta)
    (out.parent / "soak.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    idle = runs[0].idle_timeout_s
    render(runs, section, figure, setup_lines(k, interval, idle)).write()
    for line in verdict(runs).lines:
        say("bench soak", line)
    failed = [s for r in runs for s in r.failed]
    for s in failed[:10]:
        say("bench soak", f"failed session at {s.started:.0f} s: {s.error or 'no messages'}")
    return EXIT_SESSIONS_FAILED if failed else 0


def run(
    brokers: list[str], minutes: float, k: int, seed: int, interval: float, out: Path
) -> tuple[str, bool]:
    """Re-run inside a fresh private network namespace (as bench stream does); the section
    it wrote, and whether every session got messages."""
    if "redis" in brokers and procs.REDIS_SERVER is None:
        raise SystemExit("bench soak --broker redis needs redis-server (Debian redis-server)")
    broker = "both" if len(brokers) > 1 else brokers[0]
    command = f"emostream bench soak --minutes {minutes:g} --broker {broker} --sessions {k}"
    command += f" --seed {seed} --interval {interval:g}"
    args = [",".join(brokers), f"{minutes}", f"{k}", f"{seed}", f"{interval}"]
    argv = [sys.executable, "-m", "emostream.bench.soak", *args, str(out.resolve()), command]
    rc = netns.run_in_netns(argv).returncode
    if rc not in (0, EXIT_SESSIONS_FAILED):
        raise SystemExit(f"bench soak failed (exit {rc}) before writing its section")
    return read_section(out, SECTION), rc == 0


if __name__ == "__main__":
    sys.exit(
        run_inside(
            sys.argv[1].split(","),
            float(sys.argv[2]),
            int(sys.argv[3]),
            int(sys.argv[4]),
            float(sys.argv[5]),
            Path(sys.argv[6]),
            sys.argv[7],
        )
    )
