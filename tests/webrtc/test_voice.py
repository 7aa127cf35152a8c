"""Voice end to end: real RAVDESS speech over WebRTC, sessions as call centres send them.

One server per broker (in-process, and Redis with a separate worker). Against each, the
sessions run at once, the whole clip each, and the tests below look at what each got:

- ``file``: ``emostream client clip.wav`` (audio only, Opus): a clip with a second of
  silence before it and three after; speech windows over the clip, none in the silence;
- ``pcmu`` / ``pcma``: the same file offered in G.711 only, as softphones send it;
- ``two``: agent and customer as two audio tracks of one session, plus SSE;
- ``both``: a camera (the face video) and a microphone (the clip) in one session.

Nothing here is about speed (``emostream bench stream --audio`` is).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from shared_media import RAVDESS_CLIP, media_file, ravdess_file

from emostream.bench.procs import EMOSTREAM, Server, Worker
from emostream.models.repository import ModelRepository
from emostream.paths import model_root
from emostream.stream.audio import read_audio
from emostream.stream.client import EmotionClient, Source

from redis_server import RedisServer
from voice_models import has_voice_model, voice_repo  # noqa: F401

PAD_S, TAIL_S = 1.0, 3.0
CUSTOMER_CLIP = "Actor_02/03-01-03-02-01-01-02.flac"
CUSTOMER_PAD_S = 2.5  # the customer speaks later than the agent
END_S = 60.0  # failure guard only: every session ends on its own within seconds


@dataclass
class Padded:
    path: Path
    speech_from: float  # media seconds where the clip starts
    speech_to: float  # and where it ends


def _write(path: Path, clip: Path, pad_s: float, tail_s: float) -> Padded:
    x = read_audio(clip)
    rate = 16000
    samples = np.concatenate([np.zeros(round(pad_s * rate)), x, np.zeros(round(tail_s * rate))])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return Padded(path, pad_s, pad_s + len(x) / rate)


@dataclass
class Got:
    """What one session received: its messages (as JSON), and what we know of it."""

    messages: list[dict] = field(default_factory=list)
    mids: dict[str, str] = field(default_factory=dict)  # mid -> what it played
    answer: str = ""
    sse: list[dict] = field(default_factory=list)

    def voice(self, track: str | None = None) -> list[dict]:
        return [
            m
            for m in self.messages
            if m["type"] == "voice" and (track is None or m["track"] == track)
        ]


async def _session(
    url: str,
    source: Source,
    codec: str | None = None,
    sse: bool = False,
    until: Callable[[list[dict]], bool] | None = None,
) -> Got:
    """One session's messages until it ends (its media did), or ``until`` says enough."""
    got = Got()
    async with EmotionClient(url, source=source, audio_codec=codec) as c:
        got.answer = c.pc.remoteDescription.sdp
        for t in source.tracks:
            if t.kind == "audio":
                got.mids[c.mid(t) or "?"] = source.label(t)
        reader = (
            asyncio.create_task(_sse(f"{url}/v1/sessions/{c.session_id}/events")) if sse else None
        )
        async for msg in c.messages(idle_timeout_s=10):
            got.messages.append(msg.to_dict())
            if until is not None and until(got.messages):
                break
        if reader is not None:
            got.sse = await asyncio.wait_for(reader, 10)
    return got


async def _sse(url: str) -> list[dict]:
    out: list[dict] = []
    async with (
        httpx.AsyncClient(timeout=30, trust_env=False) as http,
        http.stream("GET", url) as resp,
    ):
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def _cli(url: str, path: Path) -> Got:
    """``emostream client FILE --format jsonl``, the way a user runs it."""
    run = subprocess.run(
        [*EMOSTREAM, "client", str(path), "--url", url, "--format", "jsonl", "--idle", "10"],
        capture_output=True,
        text=True,
        timeout=END_S,
    )
    assert run.returncode == 0, run.stderr
    got = Got(messages=[json.loads(line) for line in run.stdout.splitlines() if line.strip()])
    for line in run.stderr.splitlines():  # "emostream: audio track 0: clip.wav (audio)"
        if "audio track" in line:
            mid, _, what = line.split("audio track ", 1)[1].partition(": ")
            got.mids[mid] = what
    return got


class RecordedMicrophone:
    """A stand-in for the ``sounddevice`` module: one input device that plays a recording.

    This machine has no microphone, so ``Source.microphone()`` (``emostream client --mic``)
    runs against this instead: the client's own ``MicrophoneTrack`` opens it exactly as it
    opens PortAudio, and gets 20 ms int16 blocks at 48 kHz from a thread in real time.
    """

    PortAudioError = OSError

    def __init__(self, clip: Path) -> None:
        self.samples = (np.clip(read_audio(clip, rate=48000), -1, 1) * 32767).astype(np.int16)

    def query_devices(self, device: object, kind: str) -> dict[str, object]:
        assert kind == "input"
        return {"name": "recorded microphone"}

    def InputStream(self, **kw: Any) -> _Playback:
        assert kw["samplerate"] == 48000 and kw["channels"] == 1 and kw["dtype"] == "int16"
        return _Playback(self.samples, kw["blocksize"], kw["callback"])


class _Playback:
    def __init__(self, samples: np.ndarray, block: int, callback: Callable[..., None]) -> None:
        self.samples, self.block, self.callback = samples, block, callback
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        t0, n = time.monotonic(), 0
        while not self.stopped.is_set():
            chunk = self.samples[n * self.block : (n + 1) * self.block]
            if len(chunk) < self.block:  # the recording is over: the room goes quiet
                chunk = np.zeros(self.block, np.int16)
            self.callback(chunk.reshape(-1, 1), self.block, None, None)
            n += 1
            self.stopped.wait(max(0.0, t0 + n * self.block / 48000 - time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.stopped.set()


async def _microphone(url: str, clip: Padded) -> Got:
    """A session from ``Source.microphone()`` with the recording as its microphone."""
    sys.modules["sounddevice"] = RecordedMicrophone(clip.path)  # type: ignore[assignment]
    try:
        return await _session(url, Source.microphone(), until=partial(_past, clip))
    finally:
        del sys.modules["sounddevice"]


def _past(clip: Padded, messages: list[dict]) -> bool:
    """The camera+mic session has what it needs once the silence after the clip is in."""
    return any(m["type"] == "voice" and m["start"] >= clip.speech_to + 1.0 for m in messages)


@dataclass
class Run:
    clip: Padded
    customer: Padded
    sessions: dict[str, Got]


def _run_all(url: str, tmp: Path) -> Run:
    clip = _write(tmp / "agent.wav", ravdess_file(RAVDESS_CLIP), PAD_S, TAIL_S)
    customer = _write(tmp / "customer.wav", ravdess_file(CUSTOMER_CLIP), CUSTOMER_PAD_S, 2.5)
    video = str(media_file("woman2.mp4"))

    async def everything() -> dict[str, Got]:
        cli = asyncio.create_task(asyncio.to_thread(_cli, url, clip.path))
        names = ["pcmu", "pcma", "two", "both", "mic"]
        done = await asyncio.gather(
            _session(url, Source.file(str(clip.path)), codec="PCMU"),
            _session(url, Source.file(str(clip.path)), codec="PCMA"),
            _session(url, Source.files([str(clip.path), str(customer.path)]), sse=True),
            _session(url, Source.files([video, str(clip.path)]), until=partial(_past, clip)),
            _microphone(url, clip),
        )
        return {"file": await cli, **dict(zip(names, done, strict=True))}

    return Run(clip, customer, asyncio.run(asyncio.wait_for(everything(), END_S)))


@pytest.fixture(scope="module", params=["memory", "redis"])
def run(
    request: pytest.FixtureRequest,
    netns_ip: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    """Every session against a server with the real voice model and Silero VAD."""
    repo: ModelRepository = request.getfixturevalue("has_voice_model")  # skips without one
    root = str(repo.root)
    logs = tmp_path_factory.mktemp(f"voice-{request.param}")
    if request.param == "memory":
        s = Server(netns_ip, logs, EMOSTREAM_IDLE_TIMEOUT_S="2", EMOSTREAM_MODEL_ROOT=root)
        try:
            yield _run_all(s.url, logs)
        finally:
            s.stop()
        return
    redis = RedisServer(logs / "redis").start()
    worker = Worker(redis.url, logs, "voice-tests-worker", EMOSTREAM_MODEL_ROOT=root)
    s = Server(
        netns_ip,
        logs,
        EMOSTREAM_IDLE_TIMEOUT_S="2",
        EMOSTREAM_MODEL_ROOT=root,
        EMOSTREAM_BROKER=redis.url,
    )
    try:
        yield _run_all(s.url, logs)
    finally:
        s.stop()
        worker.stop()
        redis.stop()


def _check_speech(got: Got, track: str, clip: Padded, may_miss: int = 0) -> None:
    """Speech windows over the clip, none in the silence after it, one message a window
    (``may_miss``: windows that may be missing, each one hop left out of the grid)."""
    voice = got.voice(track)
    assert voice, f"no voice message for track {track}: {got.messages[:3]}"
    assert all(m["session"] == voice[0]["session"] and m["schema"] == 1 for m in voice)
    starts = [m["start"] for m in voice]
    assert len(starts) == len(set(starts)), "a window was sent twice"
    assert starts == sorted(starts)
    hop = np.diff(starts)
    if len(hop) > 2 and not np.isclose(hop[-1], hop[0], atol=0.02):
        hop = hop[:-1]  # the track's end: its last window ends at its last sample, off the hop
    step = float(np.median(hop))
    skipped = [round(h / step) - 1 for h in hop]
    assert np.allclose(hop, np.round(hop / step) * step, atol=0.02), f"off the hop: {starts}"
    assert sum(skipped) <= may_miss, f"windows missing: {starts}"
    speech = [m for m in voice if m["speech"]]
    assert speech, f"no speech window in track {track}"
    for m in speech:
        assert m["end"] > clip.speech_from and m["start"] < clip.speech_to, m
        assert m["label"] in m["scores"] and m["confidence"] == max(m["scores"].values())
        assert abs(sum(m["scores"].values()) - 1) < 1e-3
        assert m["model"].startswith("voice-emotion/") and m["latency_ms"] >= 0
    silent = [m for m in voice if m["start"] >= clip.speech_to + 0.2]
    assert silent, "the silent stretch after the clip got no window"
    assert not any(m["speech"] for m in silent)
    assert all("scores" not in m or not m["scores"] for m in silent)  # never classified


def test_the_client_streams_a_real_clip_speech_is_found_and_silence_is_not(run: Run) -> None:
    got = run.sessions["file"]
    assert len(got.mids) == 1, got.mids  # an audio-only session: one track, no video
    (track,) = got.mids
    assert {m["type"] for m in got.messages} == {"voice"}
    _check_speech(got, track, run.clip)
    before = [m for m in got.voice() if m["end"] <= run.clip.speech_from]
    assert not any(m["speech"] for m in before)


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
def test_a_g711_session_is_answered_in_g711_and_analysed(run: Run, codec: str) -> None:
    got = run.sessions[codec]
    audio = [line for line in got.answer.splitlines() if line.startswith("a=rtpmap:")]
    assert audio and all(codec.upper() in line for line in audio), audio
    (track,) = got.mids
    _check_speech(got, track, run.clip)


def test_two_audio_tracks_get_voice_messages_each_told_apart_by_track(run: Run) -> None:
    got = run.sessions["two"]
    assert len(got.mids) == 2
    agent, customer = got.mids  # in the order the client added them
    assert {m["track"] for m in got.voice()} == {agent, customer}
    _check_speech(got, agent, run.clip)
    _check_speech(got, customer, run.customer)
    first = {t: min(m["start"] for m in got.voice(t) if m["speech"]) for t in (agent, customer)}
    assert first[agent] < first[customer]  # the customer's speech starts later
    # SSE carries the same voice messages as the data channel
    sse = {(m["track"], m["start"]): m for m in got.sse if m.get("type") == "voice"}
    channel = {(m["track"], m["start"]): m for m in got.voice()}
    common = sse.keys() & channel.keys()
    assert len(common) >= 0.8 * len(channel)
    assert all(sse[k]["speech"] == channel[k]["speech"] for k in common)
    assert all(sse[k].get("scores") == channel[k].get("scores") for k in common)


def test_camera_and_microphone_get_both_kinds_of_message(run: Run) -> None:
    got = run.sessions["both"]
    faces = [m for m in got.messages if m["type"] == "face"]
    assert faces and any(m["faces"] for m in faces)
    (track,) = got.mids
    # Beside five other sessions on two cores, with its video going to the face model, this
    # session lost one voice window in some runs on the Redis broker (seen in CI and here
    # in 3 of 7 runs; the memory broker never): allowed, once, and only here.
    _check_speech(got, track, run.clip, may_miss=1)


def test_the_microphone_source_is_analysed_like_a_file(run: Run) -> None:
    """``emostream client --mic``'s track, fed by a recording (no device on this machine)."""
    got = run.sessions["mic"]
    (track,) = got.mids
    _check_speech(got, track, run.clip)


def test_a_server_without_a_voice_model_says_so_once_and_serves_faces(
    netns_ip: str, tmp_path: Path
) -> None:
    root = tmp_path / "models"  # the face models only
    root.mkdir()
    for name in ("face-emotion", "yunet"):
        (root / name).symlink_to(model_root() / name)
    clip = _write(tmp_path / "clip.wav", ravdess_file(RAVDESS_CLIP), 0.5, 0.5)
    video = str(media_file("woman2.mp4"))
    s = Server(netns_ip, tmp_path, EMOSTREAM_IDLE_TIMEOUT_S="2", EMOSTREAM_MODEL_ROOT=str(root))
    try:
        ready = httpx.get(f"{s.url}/readyz", trust_env=False).json()
        assert ready["ready"] is True
        enough = lambda ms: sum(m["type"] == "face" for m in ms) >= 30  # noqa: E731
        source = Source.files([video, str(clip.path)])
        got = asyncio.run(asyncio.wait_for(_session(s.url, source, until=enough), END_S))
    finally:
        s.stop()
    errors = [m for m in got.messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["voice_unavailable"], errors
    assert "voice" in errors[0]["detail"]
    assert not got.voice()
    assert any(m["type"] == "face" and m["faces"] for m in got.messages)
