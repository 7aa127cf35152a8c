"""``emostream bench calls``: N concurrent two-role calls over one call transport.

Each call is stereo 8 kHz: the customer speaks the RAVDESS loop of ``bench stream --audio``
(seven actors, pauses between clips), the agent the same loop started half-way, so both
roles talk and pause. Both roles are analysed for the benchmark
(``calls.analyse_roles=customer,agent``: a load figure, not a deployment). A client plays
every call in real time, in the transport's own framing:

- ``audiohook``: Genesys AudioHook v2, 100 ms stereo PCMU frames (external = customer);
- ``twilio``: Media Streams JSON messages, 20 ms of μ-law per track and message;
- ``webrtc``: one peer connection with two audio tracks (Opus), through ``EmotionClient``.

The figure is the server-side ``latency_ms`` of each speech window's voice message (from
the arrival of the window's last sample to the send), read from each session's SSE
stream; drops are the server's voice windows dropped over those submitted. Everything
runs inside a private network namespace, as the other stream benchmarks do. Goal on this
machine: 50 calls with p99 < 200 ms and no window dropped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path

import httpx
import numpy as np

from emostream.bench import procs
from emostream.bench.report import Section
from emostream.bench.stream import attempt, bench_env, inside_ip, rerun_in_netns
from emostream.bench.stream_audio import (
    WARMUP_S,
    AudioResult,
    measure_window,
    render,
    the_loop,
)
from emostream.stream.transports.audiohook.codec import encode_ulaw

SECTION = "Calls (emostream bench calls)"
SETUP = (
    "- Each call: two roles, both analysed for the benchmark (`calls.analyse_roles="
    "customer,agent,unknown`), the customer speaking the RAVDESS loop of `bench stream "
    "--audio` at 8 kHz and the agent the same loop from its middle; transport `{transport}` "
    "(audiohook: 100 ms stereo PCMU frames; twilio: Media Streams JSON, 20 ms of mu-law "
    "per track and message; webrtc: two Opus "
    "tracks), played in real time by one client process beside the server, inside a "
    "private network namespace. Server: `emostream serve`, embedded broker, default "
    "settings otherwise."
)
TRANSPORTS = ("audiohook", "twilio", "webrtc")
BENCH_KEY = "bench-key"  # the AudioHook API key of the bench's server (no secret)
ORG = "00000000-0000-4000-8000-00000000be4c"
RATE = 8000
CHUNK = 160  # 20 ms at 8 kHz, as Twilio sends


def call_audio() -> tuple[np.ndarray, np.ndarray]:
    """(customer, agent) 8 kHz int16: the loop, and the loop from its middle."""
    with wave.open(str(the_loop()), "rb") as w:
        pcm16 = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    customer = pcm16[::2].copy()  # 16 -> 8 kHz (the loop is speech band already)
    return customer, np.roll(customer, len(customer) // 2)


async def _twilio_call(
    ws_url: str, sid: str, audio: tuple[np.ndarray, np.ndarray], stop: asyncio.Event
) -> None:
    from websockets.asyncio.client import connect

    customer, agent = (encode_ulaw(a) for a in audio)
    async with connect(ws_url, max_size=None) as ws:
        seq = 1

        async def send(message: dict[str, object]) -> None:
            nonlocal seq
            await ws.send(json.dumps({**message, "sequenceNumber": str(seq)}))
            seq += 1

        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "streamSid": sid,
            "callSid": "CA" + sid[2:],
            "accountSid": "AC" + "0" * 32,
            "tracks": ["inbound", "outbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            "customParameters": {},
        }
        await send({"event": "start", "streamSid": sid, "start": start})
        t0, chunk = time.monotonic(), 0
        while not stop.is_set():
            at = (chunk * CHUNK) % (len(customer) - CHUNK)
            ms = str(chunk * CHUNK // 8)
            for track, data in (("inbound", customer), ("outbound", agent)):
                payload = base64.b64encode(data[at : at + CHUNK]).decode()
                media = {"track": track, "chunk": str(chunk + 1), "timestamp": ms}
                await send(
                    {"event": "media", "streamSid": sid, "media": {**media, "payload": payload}}
                )
            chunk += 1
            await asyncio.sleep(max(0.0, t0 + chunk * 0.02 - time.monotonic()))
        await send({"event": "stop", "streamSid": sid, "stop": {"callSid": "CA" + sid[2:]}})


async def _audiohook_call(
    ws_url: str, sid: str, audio: tuple[np.ndarray, np.ndarray], stop: asyncio.Event
) -> None:
    """One Genesys AudioHook v2 call: open (PCMU, external and internal), 100 ms stereo
    frames in real time, close."""
    import uuid

    from websockets.asyncio.client import connect

    headers = {
        "Audiohook-Organization-Id": ORG,
        "Audiohook-Session-Id": sid,
        "Audiohook-Correlation-Id": str(uuid.uuid4()),
        "X-API-KEY": BENCH_KEY,
    }
    stereo = np.stack(audio, axis=1)  # (samples, 2): external = customer, internal = agent
    frame = RATE // 10
    async with connect(ws_url, additional_headers=headers, max_size=None) as ws:
        seq, samples, serverseq = 0, 0, 0

        async def send(kind: str, parameters: dict[str, object]) -> None:
            nonlocal seq
            seq += 1
            await ws.send(
                json.dumps(
                    {
                        "version": "2",
                        "id": sid,
                        "type": kind,
                        "seq": seq,
                        "serverseq": serverseq,
                        "position": f"PT{samples / RATE:.3f}S",
                        "parameters": parameters,
                    }
                )
            )

        async def receive() -> None:
            nonlocal serverseq
            async for text in ws:
                if isinstance(text, str):
                    serverseq = int(json.loads(text)["seq"])

        media = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"]}
        participant = {"id": str(uuid.uuid4()), "ani": "+15550100", "dnis": "+15550199"}
        await send(
            "open",
            {
                "organizationId": ORG,
                "conversationId": str(uuid.uuid4()),
                "participant": participant,
                "media": [{**media, "rate": RATE}],
                "language": "en-US",
            },
        )
        reader = asyncio.create_task(receive())
        t0, n = time.monotonic(), 0
        while not stop.is_set():
            at = (n * frame) % (len(stereo) - frame)
            await ws.send(encode_ulaw(stereo[at : at + frame]))
            samples += frame
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * 0.1 - time.monotonic()))
        await send("close", {"reason": "end"})
        await asyncio.sleep(0.5)
        reader.cancel()


async def _sse(http: httpx.AsyncClient, url: str, sid: str, on: Callable[[dict], None]) -> None:
    """Every message of ``sid``'s SSE stream (waiting for the session to exist)."""
    for _ in range(100):
        async with http.stream("GET", f"{url}/v1/sessions/{sid}/events") as r:
            if r.status_code == 404:
                await asyncio.sleep(0.05)
                continue
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    on(json.loads(line[5:]))
            return


async def _measure(
    server: procs.Server,
    transport: str,
    n: int,
    seconds: float,
    audio: tuple[np.ndarray, np.ndarray],
) -> AudioResult:
    url = server.url
    result = AudioResult(n, seconds)
    measuring, stop = asyncio.Event(), asyncio.Event()

    def on(msg: dict) -> None:
        if measuring.is_set() and msg.get("type") == "voice":
            if msg.get("speech"):
                result.latencies_ms.append(float(msg["latency_ms"]))
                result.messages += 1
            else:
                result.silence_ms.append(float(msg["latency_ms"]))

    # one connection per call's SSE stream, and one more for /metrics: no pool limit
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(trust_env=False, timeout=None, limits=limits) as http:
        tasks: list[asyncio.Task[None]] = []
        closers: list[Callable[[], Awaitable[object]]] = []
        for i in range(n):
            if transport in ("twilio", "audiohook"):
                sid = f"MZ{i:032x}" if transport == "twilio" else str(uuid.UUID(int=i + 1))
                ws = url.replace("http://", "ws://") + f"/v1/{transport}"
                call = _twilio_call if transport == "twilio" else _audiohook_call
                tasks.append(asyncio.create_task(call(ws, sid, audio, stop)))
                tasks.append(asyncio.create_task(_sse(http, url, sid, on)))
            else:
                tasks.append(asyncio.create_task(_webrtc_call(url, on, stop, closers)))
            await asyncio.sleep(0.5 / n)  # spread over one hop
        result.connected = n
        await asyncio.sleep(WARMUP_S)
        await measure_window(server, http, result, measuring)
        stop.set()
        await asyncio.gather(*(c() for c in closers), return_exceptions=True)
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
    return result


async def _webrtc_call(
    url: str,
    on: Callable[[dict], None],
    stop: asyncio.Event,
    closers: list[Callable[[], Awaitable[object]]],
) -> None:
    from emostream.stream.client import EmotionClient, Source

    loop = str(the_loop())
    client = EmotionClient(url, source=Source.files([loop, loop], loop=True))
    await client.connect()
    closers.append(client.close)
    async for msg in client.messages():
        on(msg.to_dict())
        if stop.is_set():
            return


def one_run(
    transport: str, n: int, seconds: float, logs: Path, env: Mapping[str, str] | None = None
) -> AudioResult:
    extra = {
        "EMOSTREAM_SESSION__MAX_SESSIONS": str(max(32, n)),
        "EMOSTREAM_CALLS__ANALYSE_ROLES": "customer,agent,unknown",
        "EMOSTREAM_AUDIOHOOK__API_KEYS": json.dumps({BENCH_KEY: ""}),
        "EMOSTREAM_AUDIOHOOK__MAX_SESSIONS_PER_KEY": str(max(32, n)),
        **(env or {}),
    }
    server = procs.Server(inside_ip(), logs, environ=bench_env(), **extra)
    try:
        return asyncio.run(_measure(server, transport, n, seconds, call_audio()))
    finally:
        server.stop(20)


def run_inside(transport: str, calls: list[int], seconds: float, out: Path, command: str) -> str:
    inside_ip()
    section = Section(f"{SECTION}: {transport}", command, out)
    with tempfile.TemporaryDirectory(prefix="emostream-bench-calls-") as logs:
        results = [
            attempt(
                f"{transport}: ", n, seconds, partial(one_run, transport, n, seconds, Path(logs))
            )
            for n in calls
        ]
    setup = SETUP.format(transport=transport)
    return render(results, section, setup, "two-role calls").write()


def run(
    transport: str, calls: list[int], seconds: float = 20.0, out: Path = Path("docs/BENCHMARKS.md")
) -> str:
    """Re-run this benchmark inside a fresh private network namespace, then report."""
    if transport not in TRANSPORTS:
        raise SystemExit(f"bench calls: --transport is one of {', '.join(TRANSPORTS)}")
    args = [transport, ",".join(map(str, calls)), str(seconds), str(out.resolve())]
    return rerun_in_netns("emostream.bench.calls", args, out, f"{SECTION}: {transport}")


if __name__ == "__main__":
    run_inside(
        sys.argv[1],
        [int(x) for x in sys.argv[2].split(",")],
        float(sys.argv[3]),
        Path(sys.argv[4]),
        f"emostream bench calls --transport {sys.argv[1]} --calls {sys.argv[2]} "
        f"--seconds {sys.argv[3]}",
    )
