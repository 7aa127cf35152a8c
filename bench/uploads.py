"""``emostream bench uploads``: live sessions' latency with and without a burst of large
uploads beside them (issue 24: REST work must not move a live session's latency).

One ``emostream serve`` per configuration, ``clients`` WebRTC sessions publishing the
stream bench's clip (``bench.stream``), inside the private network namespace the command
makes for itself (``bench.netns``: no WebRTC leaves the machine). Each configuration
measures a quiet window, then a window that starts with ``uploads`` concurrent
``POST /v1/predict`` of a 1.6 kB lossless WebP of 16383x2441 pixels (40 MP, made in memory)
and lasts until they are all answered; the server's peak RSS (psutil, sampled every 20 ms)
over the whole burst. Configurations: REST threads at the sessions' priority
(``limits.rest_nice`` 0), at the default niceness, and with ``--baseline PATH`` the server
of another checkout (the code before a change) for comparison.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from emostream.bench import procs
from emostream.bench.measure import pct, say
from emostream.bench.report import Section
from emostream.bench.stream import bench_env, counts, inside_ip, rerun_in_netns, the_clip

SECTION = "Live sessions beside uploads (issue 24)"
WEBP_SIZE = (16383, 2441)
UPLOAD_GUARD_S = 300.0


@dataclass
class Window:
    latencies_ms: list[float] = field(default_factory=list)
    frames_in: float = 0.0
    dropped: float = 0.0
    seconds: float = 0.0

    def cells(self) -> list[str]:
        p50, p99 = pct(self.latencies_ms, 50), pct(self.latencies_ms, 99)
        return [f"{p50:.1f}", f"{p99:.1f}", f"{int(self.dropped)} of {int(self.frames_in)}"]


@dataclass
class ConfigResult:
    label: str
    quiet: Window
    burst: Window
    peak_rss_mb: float
    answers: dict[int, int]


def big_webp() -> bytes:
    """The reported upload: a flat lossless WebP, 1.6 kB for 40 MP (never written out)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", WEBP_SIZE, (128, 128, 128)).save(buf, "WEBP", lossless=True)
    return buf.getvalue()


class PeakRss:
    """The server's peak resident memory, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 1e6


async def _measure(
    server: procs.Server, clients: int, uploads: int, seconds: float
) -> ConfigResult:
    from aiortc.contrib.media import MediaPlayer

    from emostream.schema import ErrorMessage
    from emostream.stream.client import EmotionClient, Source

    clip, body = the_clip(), big_webp()
    windows: list[Window] = []
    current: list[Window | None] = [None]
    async with httpx.AsyncClient(trust_env=False, timeout=UPLOAD_GUARD_S) as http:
        sessions = []
        for _ in range(clients):
            player = MediaPlayer(str(clip), decode=False)
            assert player.video is not None
            sessions.append(EmotionClient(server.url, source=Source([player.video], player)))
        await asyncio.gather(*(c.connect() for c in sessions))

        async def consume(c: EmotionClient) -> None:
            async for msg in c.messages():
                window = current[0]
                if window is not None and not isinstance(msg, ErrorMessage):
                    window.latencies_ms.append(msg.latency_ms)

        readers = [asyncio.create_task(consume(c)) for c in sessions]
        await asyncio.sleep(3.0)  # warm-up

        async def window(work: Awaitable[object] | None) -> Window:
            w = Window()
            in0, drop0 = counts((await http.get(f"{server.url}/metrics")).text)
            t0 = time.monotonic()
            current[0] = w
            await asyncio.sleep(seconds)
            if work is not None:
                await work
            current[0] = None
            w.seconds = time.monotonic() - t0
            in1, drop1 = counts((await http.get(f"{server.url}/metrics")).text)
            w.frames_in = in1 - in0
            w.dropped = sum(drop1.values()) - sum(drop0.values())
            windows.append(w)
            return w

        quiet = await window(None)
        rss = PeakRss(server.pid)
        headers = {"content-type": "image/webp"}
        burst_work = asyncio.gather(
            *(
                http.post(f"{server.url}/v1/predict", content=body, headers=headers)
                for _ in range(uploads)
            )
        )
        burst = await window(burst_work)
        peak = rss.stop()
        answers: dict[int, int] = {}
        for r in burst_work.result():
            answers[r.status_code] = answers.get(r.status_code, 0) + 1
        await asyncio.gather(*(c.close() for c in sessions), return_exceptions=True)
        for t in readers:
            t.cancel()
    return ConfigResult("", quiet, burst, peak, answers)


def configurations(baseline: str | None) -> list[tuple[str, dict[str, str]]]:
    out = [
        ("REST at the sessions' priority (rest_nice 0)", {"EMOSTREAM_LIMITS__REST_NICE": "0"}),
        ("default (rest_nice 10)", {}),
    ]
    if baseline:
        out.insert(0, (f"before (the server of {Path(baseline).name})", {"PYTHONPATH": baseline}))
    return out


def run_inside(
    clients: int, uploads: int, seconds: float, out: Path, baseline: str | None, command: str
) -> str:
    ip = inside_ip()
    section = Section(SECTION, command, out)
    results = []
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as logs:
        for label, env in configurations(baseline):
            say("bench uploads", f"{label}: {clients} session(s), {uploads} uploads …")
            server = procs.Server(ip, Path(logs), environ={**bench_env(), **env})
            try:
                r = asyncio.run(_measure(server, clients, uploads, seconds))
            finally:
                server.stop(20)
            r.label = label
            say(
                "bench uploads",
                f"  quiet {r.quiet.cells()}, burst {r.burst.cells()}, peak {r.peak_rss_mb:.0f} MB",
            )
            results.append(r)
    header = ["server", "quiet p50 ms", "quiet p99 ms", "quiet drops", "with uploads p50 ms"]
    header += ["with uploads p99 ms", "with uploads drops", "burst s", "answers", "peak RSS MB"]
    rows = [
        [
            r.label,
            *r.quiet.cells(),
            *r.burst.cells(),
            f"{r.burst.seconds:.0f}",
            ", ".join(f"{k}: {v}" for k, v in sorted(r.answers.items())),
            f"{r.peak_rss_mb:.0f}",
        ]
        for r in results
    ]
    w, h = WEBP_SIZE
    section.measured().machine(
        f"- {clients} WebRTC session(s) (the stream bench's clip, 640x480 at 15 fps) on one "
        "`emostream serve` (embedded broker, default settings but for the row's), inside a "
        f"private network namespace; {uploads} concurrent `POST /v1/predict` of a "
        f"{len(big_webp())}-byte lossless WebP of {w}x{h} pixels start the second window, "
        f"which lasts {seconds:g} s or until all are answered. Latency: the sessions' "
        "`latency_ms`; drops: the server's counters in the window; peak RSS: the server's, "
        "sampled every 20 ms over the burst.",
    )
    return section.table(header, rows).write()


def run(clients: int, uploads: int, seconds: float, out: Path, baseline: Path | None) -> str:
    """Re-run this benchmark inside a fresh private network namespace, then report."""
    args = [str(clients), str(uploads), str(seconds), str(out.resolve())]
    args.append(str(baseline.resolve()) if baseline else "")
    return rerun_in_netns("emostream.bench.uploads", args, out, SECTION)


if __name__ == "__main__":
    n, u, s, dest, base = sys.argv[1:6]
    command = f"emostream bench uploads --clients {n} --uploads {u} --seconds {float(s):g}"
    if base:
        command += f" --baseline {base}"
    run_inside(int(n), int(u), float(s), Path(dest), base or None, command)
