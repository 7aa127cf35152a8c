"""``emostream bench stream --audio``: N concurrent audio-only calls against one server.

A call centre's load: each client publishes one audio track (Opus, 48 kHz, encoded by the
client) and no video. The track plays a real speech loop, made once from RAVDESS clips
of several actors with pauses between them (about two thirds speech), and loops for as long
as the run lasts; clients join spread over one hop, so their windows do not all end at the
same instant. Everything runs inside a private network namespace (as ``bench stream``).

The figure is the server-side ``latency_ms`` of each speech window's voice message: from
the arrival of the window's last sample to the message being sent (silent windows are
answered without a model and reported apart). The largest N with p99 < 200 ms and under
2 % of windows dropped is the capacity of the machine.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import numpy as np

from emostream.bench import procs
from emostream.bench.measure import pct
from emostream.bench.report import Section, usable_cores
from emostream.bench.stream import (
    RunResult,
    attempt,
    bench_env,
    counts,
    inside_ip,
    rerun_in_netns,
)

SECTION = "Stream, audio-only calls (emostream bench stream --audio)"
GOAL_MS = 200.0
WARMUP_S = 4.0  # past the first window (1.5 s) and the first model calls
#: Clips of the loop: RAVDESS actors 1-8, statements 1 and 2, strong intensity.
CLIPS = [
    f"Actor_{a:02d}/03-01-{e:02d}-02-{s:02d}-01-{a:02d}.flac"
    for a, e, s in [(1, 5, 1), (2, 3, 2), (3, 4, 1), (4, 6, 2), (5, 2, 1), (6, 8, 2), (7, 7, 1)]
]
PAUSE_S = 1.0


def the_loop() -> Path:
    """The speech loop as 16 kHz WAV (made once from the shared RAVDESS, then cached)."""
    from emostream.paths import cache_dir, data_root
    from emostream.stream.audio import read_audio

    out = cache_dir() / "bench" / "ravdess_call_loop.wav"
    if out.is_file():
        return out
    root = data_root()
    if root is None or not all((root / "ravdess" / c).is_file() for c in CLIPS):
        raise SystemExit("the bench needs ravdess/ from the shared data (set EMOSTREAM_DATA)")
    pause = np.zeros(round(PAUSE_S * 16000), np.float32)
    parts = [p for c in CLIPS for p in (read_audio(root / "ravdess" / c), pause)]
    samples = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    tmp.replace(out)
    return out


@dataclass
class AudioResult(RunResult):
    """``latencies_ms``: speech windows; ``silence_ms``: silent windows (no model)."""

    silence_ms: list[float] = field(default_factory=list)
    other_cpu_s: float = 0.0  # the machine's other processes during the window

    def summary(self) -> str:
        return (
            f"{self.messages / self.seconds:.1f} speech windows/s, p50 {self.pct(50):.1f} ms, "
            f"p99 {self.pct(99):.1f} ms, drops {self.drop_rate:.2%}"
        )


async def _measure(server: procs.Server, n: int, loop: Path, seconds: float) -> AudioResult:
    from emostream.schema import VoiceMessage
    from emostream.stream.client import EmotionClient, Source

    url = server.url
    result = AudioResult(n, seconds)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        voice = (await http.get(f"{url}/readyz")).json()["models"]["voice"]
        if not voice.get("available"):
            raise RuntimeError(f"the server has no voice: {voice.get('reason')}")
        clients = []
        for i in range(n):  # spread over one hop, so windows end at different instants
            c = EmotionClient(url, source=Source.file(str(loop), loop=True))
            await c.connect()
            clients.append(c)
            await asyncio.sleep(0.5 / n if i < n - 1 else 0)
        result.connected = n
        measuring = asyncio.Event()

        async def consume(c: EmotionClient) -> None:
            async for msg in c.messages():
                if measuring.is_set() and isinstance(msg, VoiceMessage):
                    if msg.speech:
                        result.latencies_ms.append(msg.latency_ms)
                        result.messages += 1
                    else:
                        result.silence_ms.append(msg.latency_ms)

        readers = [asyncio.create_task(consume(c)) for c in clients]
        await asyncio.sleep(WARMUP_S)
        await measure_window(server, http, result, measuring)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for r in readers:
            r.cancel()
    return result


async def measure_window(
    server: procs.Server, http: httpx.AsyncClient, result: AudioResult, measuring: asyncio.Event
) -> None:
    """The measuring window: ``measuring`` set for ``result.seconds``; the voice windows
    submitted and dropped (from ``/metrics``) and the CPU of the server, this client
    process and the rest of the machine meanwhile, into ``result``."""
    url = f"{server.url}/metrics"
    in0, drop0 = counts((await http.get(url)).text, "voice")
    cpu0, ccpu0 = procs.tree_cpu_seconds(server.pid), time.process_time()
    busy0 = procs.machine_busy_seconds()
    measuring.set()
    await asyncio.sleep(result.seconds)
    measuring.clear()
    result.server_cpu_s = procs.tree_cpu_seconds(server.pid) - cpu0
    result.client_cpu_s = time.process_time() - ccpu0
    busy = procs.machine_busy_seconds() - busy0
    result.machine_cpu_s = busy
    result.other_cpu_s = max(0.0, busy - result.server_cpu_s - result.client_cpu_s)
    in1, drop1 = counts((await http.get(url)).text, "voice")
    result.frames_in = in1 - in0
    result.dropped = {k: d for k, v in drop1.items() if (d := v - drop0.get(k, 0.0))}


def one_run(
    n: int, loop: Path, seconds: float, logs: Path, env: Mapping[str, str] | None = None
) -> AudioResult:
    """One ``emostream serve`` and ``n`` audio-only calls inside this namespace."""
    extra = {"EMOSTREAM_SESSION__MAX_SESSIONS": str(max(32, n)), **(env or {})}
    server = procs.Server(inside_ip(), logs, environ=bench_env(), **extra)
    try:
        return asyncio.run(_measure(server, n, loop, seconds))
    finally:
        server.stop(20)


def setup(server: str) -> str:
    """The calls and the server (``server``: its command line), one bullet."""
    return (
        "- Each call publishes one audio track, no video: a loop of seven RAVDESS clips "
        f"(actors 1-7, {PAUSE_S:g} s pauses), Opus at 48 kHz encoded by the client; all "
        "calls from one client process beside the server, inside a private network "
        f"namespace. Server: {server}, embedded broker, default settings otherwise "
        "(windows 1.5 s every 0.5 s, the default VAD, voice batch as the worker's)."
    )


SETUP = setup("`emostream serve --processes 1`")
LATENCY = (
    "- Latency: the server-side `latency_ms` of each speech window's voice message (from "
    "the arrival of the window's last sample to the send) received in the measuring "
    'window. Drops: `emostream_frames_dropped_total{modality="voice"}` over '
    '`emostream_frames_in_total{modality="voice"}` (speech windows submitted).'
)


def render(
    results: Sequence[RunResult],
    section: Section,
    setup: str = SETUP,
    kind: str = "audio-only calls",
) -> Section:
    header = ["calls", "speech windows/s", "p50 ms", "p95 ms", "p99 ms", "drops"]
    header += ["drop reasons", "silent windows p99 ms", "server CPU % total", "clients' CPU %"]
    header += ["other processes' CPU %"]
    rows: list[list[object]] = []
    for r in results:
        if r.error or not isinstance(r, AudioResult):
            failed: list[object] = [r.clients, "failed", "-", "-", "-", "-", r.error]
            rows.append(failed + ["-"] * (len(header) - len(failed)))
            continue
        rows.append(
            [
                r.clients,
                f"{r.messages / r.seconds:.1f}",
                *r.latency_cells(),
                f"{pct(r.silence_ms, 99):.1f}",
                f"{100 * r.server_cpu_s / r.seconds:.0f}",
                f"{100 * r.client_cpu_s / r.seconds:.0f}",
                f"{100 * r.other_cpu_s / r.seconds:.0f}",
            ]
        )
    section.measured().machine(
        setup,
        LATENCY + ' CPU: 100 % is one core; "other processes" is what the rest of the '
        "machine used meanwhile (on a shared machine, the capacity measured is a lower bound).",
    )
    return section.table(header, rows).add(reading(results, kind))


def reading(results: Sequence[RunResult], kind: str = "audio-only calls") -> str:
    played = [r for r in results if isinstance(r, AudioResult) and not r.error]
    short = {r.clients for r in played if delivered(r, played) < 0.9}  # not a server figure
    ok = [
        r.clients
        for r in results
        if not r.error and r.pct(99) < GOAL_MS and r.drop_rate < 0.02 and r.clients not in short
    ]
    text = (
        f"Largest number of concurrent {kind} with p99 < {GOAL_MS:.0f} ms and "
        f"< 2 % drops: {max(ok) if ok else 'none of those measured'}"
    )
    tried = max(r.clients for r in results)
    if ok and max(ok) == tried:
        text += f" (the most measured: the limit is higher than {tried})"
    text += "."
    runs = [r for r in results if not r.error and r.clients]
    if runs:
        per_call = ", ".join(
            f"{100 * r.server_cpu_s / r.seconds / r.clients:.1f} % at {r.clients}" for r in runs
        )
        text += f" Server CPU per call (one core = 100 %): {per_call}."
        text += short_of_media([r for r in runs if isinstance(r, AudioResult)])
    over = [r for r in runs if isinstance(r, AudioResult) and r.pct(99) >= GOAL_MS]
    if over:
        first = min(over, key=lambda x: x.clients)
        assert isinstance(first, AudioResult)
        used = first.server_cpu_s / first.seconds
        silent = pct(first.silence_ms, 99)
        whole = (first.server_cpu_s + first.client_cpu_s + first.other_cpu_s) / first.seconds
        cores = usable_cores()
        text += f" At {first.clients} calls the server used {used:.0%} of one core"
        if whole >= 0.9 * cores:
            text += (
                f"; with the clients and the machine's other processes, all {cores} cores "
                f"were busy ({whole:.0%}), so the limit measured is this machine's CPU, and "
                "silent windows, which never reach the model, were late too (p99 "
                f"{silent:.0f} ms)."
            )
        elif silent >= GOAL_MS:
            text += (
                f", and silent windows, which never reach the model, were late too (p99 "
                f"{silent:.0f} ms): the ingest side (the event loop receiving the media and "
                "the windowing thread, sharing the GIL) falls behind first, not the voice "
                "model."
            )
        else:
            text += (
                f" while silent windows, which never reach the model, stayed at p99 "
                f"{silent:.0f} ms: the voice worker is what falls behind first."
            )
    return text


def delivered(r: AudioResult, runs: Sequence[AudioResult]) -> float:
    """The speech windows per call of ``r`` over those of the fewest calls measured: under
    1 when its calls' speech did not all become voice messages."""
    base = min(runs, key=lambda x: x.clients)
    if not base.messages or not r.clients:
        return 1.0
    return (r.messages / r.seconds / r.clients) / (base.messages / base.seconds / base.clients)


def short_of_media(runs: Sequence[AudioResult]) -> str:
    """A row whose calls gave less speech per call than the fewest calls did: either the
    client process could not play them in real time (then the row measured the client) or
    the server's ingest could not take them in. Such a row never counts as held."""
    if len(runs) < 2:
        return ""
    base = min(runs, key=lambda r: r.clients)
    text = ""
    for r in runs:
        share = delivered(r, runs)
        if share >= 0.9:
            continue
        client = r.client_cpu_s / r.seconds
        text += (
            f" At {r.clients} calls only {share:.0%} of the speech windows that "
            f"{r.clients} calls send (by the {base.clients}-call row) became voice messages: "
        )
        if client >= 0.8:
            text += (
                f"the client process used {client:.0%} of a core and could not play them in "
                "real time, so that row measured the client, not the server."
            )
        else:
            text += "the server's ingest could not take them in."
    return text


def run_inside(clients: list[int], seconds: float, out: Path, command: str) -> str:
    inside_ip()
    section = Section(SECTION, command, out)
    loop = the_loop()
    with tempfile.TemporaryDirectory(prefix="emostream-bench-audio-") as logs:
        one = partial(one_run, loop=loop, seconds=seconds, logs=Path(logs), env=procs.SINGLE)
        results = [attempt("audio: ", n, seconds, partial(one, n)) for n in clients]
    return render(results, section).write()


def run(clients: list[int], seconds: float = 20.0, out: Path = Path("docs/BENCHMARKS.md")) -> str:
    """Re-run this benchmark inside a fresh private network namespace, then report."""
    args = [",".join(map(str, clients)), str(seconds), str(out.resolve())]
    return rerun_in_netns("emostream.bench.stream_audio", args, out, SECTION)


if __name__ == "__main__":
    run_inside(
        [int(x) for x in sys.argv[1].split(",")],
        float(sys.argv[2]),
        Path(sys.argv[3]),
        f"emostream bench stream --audio --clients {sys.argv[1]} --seconds {sys.argv[2]}",
    )
