"""Recorded calls: ``POST /v1/analyze`` and ``emostream analyze --channels`` on real speech.

The recording is a stereo WAV made from two RAVDESS sentences with silences: the agent
speaks on the left channel first, the customer on the right afterwards. Under the default
role policy the agent is not analysed: no messages, only seconds in the summary. Also the
limits (bytes while the body streams in; seconds from the header, before decoding), bad
input as 4xx, a video's faces and voice, and that the decode is chunked.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from shared_media import talking_video
from typer.testing import CliRunner

from emostream.cli import app
from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream import audio, recorded
from emostream.stream.app import create_app
from emostream.stream.audio import read_audio
from emostream.stream.calls_config import CallsConfig
from emostream.stream.server_config import LimitsConfig, ServerConfig
from emostream.stream.windows import Windower

from voice_models import CLIP, clip, has_voice_model, ravdess, voice_repo  # noqa: F401

#: the customer's sentence: another actor (happy, strong)
OTHER = "Actor_02/03-01-03-02-01-01-02.flac"
RATE = 16000
WAV = {"content-type": "audio/wav"}


@pytest.fixture(scope="module")
def call(ravdess: Path) -> tuple[bytes, float, float]:  # noqa: F811
    """The stereo WAV's bytes, its length in seconds and where the customer starts."""
    agent, customer = read_audio(ravdess / CLIP), read_audio(ravdess / OTHER)
    pause = np.zeros(RATE, np.float32)
    gap = np.zeros(len(agent) + 2 * RATE, np.float32)
    left = np.concatenate([pause, agent, pause, np.zeros(len(customer) + RATE, np.float32)])
    right = np.concatenate([gap, customer, pause])
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], 1), RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue(), len(left) / RATE, len(gap) / RATE


def _client(root: Path, **limits: object) -> TestClient:
    settings = Settings(model_root=root, limits=LimitsConfig.model_validate(limits))
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(voice_repo: ModelRepository) -> Iterator[TestClient]:  # noqa: F811
    with _client(voice_repo.root) as c:
        yield c


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    return str(body["detail"])


def test_a_stereo_call_gives_the_customers_voice_and_counts_the_agents_seconds(
    client: TestClient,
    call: tuple[bytes, float, float],
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    data, seconds, customer_from = call
    r = client.post("/v1/analyze?channels=agent,customer", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "analysis" and body["face"] == []
    assert body["seconds"] == pytest.approx(seconds, abs=0.01)
    voice = body["voice"]
    assert voice and {(m["role"], m["track"]) for m in voice} == {("customer", "customer")}
    speech = [m for m in voice if m["speech"]]
    assert speech, "the customer's sentence is speech"
    assert all(m["start"] >= customer_from - 1.5 for m in speech), "speech where they speak"
    assert all(m["label"] in m["scores"] and m["model"] for m in speech)
    summary = body["summary"]
    assert summary["type"] == "summary" and summary["transport"] == "file"
    agent, customer = summary["roles"]["agent"], summary["roles"]["customer"]
    assert agent == {"analysed": False, "audio_s": pytest.approx(seconds, abs=0.01),
                     "tracks": ["agent"]}  # fmt: skip
    assert customer["analysed"] is True and customer["windows"] == len(speech)
    assert customer["audio_s"] == pytest.approx(seconds, abs=0.01)
    assert customer["dominant"] in customer["classes"]
    assert summary["models"] == sorted({m["model"] for m in speech})


def test_raw_and_multipart_bodies_give_the_same_windows(
    client: TestClient,
    call: tuple[bytes, float, float],
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    data, _, _ = call
    raw = client.post(
        "/v1/analyze", content=data, headers={"content-type": "application/octet-stream"}
    )
    form = client.post("/v1/analyze", files={"file": ("call-42.wav", data, "audio/wav")})
    assert raw.status_code == 200 and form.status_code == 200, (raw.text, form.text)

    def windows(r: httpx.Response) -> list[tuple[float, bool, str | None]]:
        return [(m["start"], m["speech"], m.get("label")) for m in r.json()["voice"]]

    assert windows(raw) == windows(form) and windows(raw)
    assert form.json()["source"] == "call-42.wav" and "source" not in raw.json()
    assert form.json()["summary"]["ids"] == {"filename": "call-42.wav"}
    # no channels: one mixed track of role unknown, which the default policy analyses
    assert {(m["role"], m["track"]) for m in raw.json()["voice"]} == {("unknown", "0")}
    assert raw.json()["summary"]["roles"]["unknown"]["analysed"] is True


def test_the_byte_limit_is_a_413_naming_it(
    voice_repo: ModelRepository,  # noqa: F811
    call: tuple[bytes, float, float],
) -> None:
    data, _, _ = call
    with _client(voice_repo.root, max_recording_bytes=100_000) as c:
        detail = _error(c.post("/v1/analyze", content=data, headers=WAV), 413, "body_too_large")
        assert "100000" in detail
        multipart = c.post("/v1/analyze", files={"file": ("call.wav", data, "audio/wav")})
        _error(multipart, 413, "body_too_large")


def test_the_seconds_limit_is_a_413_from_the_header_before_any_decoding(
    voice_repo: ModelRepository,  # noqa: F811
    call: tuple[bytes, float, float],
    has_voice_model: ModelRepository,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _, _ = call
    resampled: list[int] = []
    inner = audio.Resampler.__call__

    def counting(self: audio.Resampler, frame: av.AudioFrame | None) -> np.ndarray:
        out = inner(self, frame)
        resampled.append(len(out))
        return out

    monkeypatch.setattr(audio.Resampler, "__call__", counting)
    with _client(voice_repo.root, max_recording_s=5) as c:
        detail = _error(c.post("/v1/analyze", content=data, headers=WAV), 413, "too_long")
        assert "5 s" in detail and "header" in detail
        assert resampled == [], "refused from the header: nothing was decoded"
        # a container whose header says nothing: refused once 5 s are decoded, not at the end
        for module in (audio, recorded):
            monkeypatch.setattr(module, "header_seconds", lambda container: None)
        detail = _error(c.post("/v1/analyze", content=data, headers=WAV), 413, "too_long")
        assert "5 s" in detail
        assert 0 < sum(resampled) <= 6 * RATE


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b"this is not audio\n" * 200, "audio/wav", 415, "unsupported_format"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64, "audio/wav", 415, "unsupported_format"),
        (b"", "audio/wav", 400, "empty_body"),
        (b"\x00" * 100, "text/plain", 415, "unsupported_media_type"),
    ],
    ids=["text", "broken-header", "empty", "content-type"],
)
def test_bad_input_is_a_4xx_with_a_reason(
    client: TestClient,
    has_voice_model: ModelRepository,  # noqa: F811
    body: bytes,
    ctype: str,
    status: int,
    code: str,
) -> None:
    _error(client.post("/v1/analyze", content=body, headers={"content-type": ctype}), status, code)


def test_a_picture_and_wrong_channels_are_4xx_and_a_cut_file_goes_as_far_as_it_can(
    client: TestClient,
    call: tuple[bytes, float, float],
    media: Path,
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    data, _, _ = call
    photo = (media / "justin.jpg").read_bytes()
    detail = _error(
        client.post("/v1/analyze", content=photo, headers=WAV), 415, "unsupported_format"
    )
    assert "/v1/predict" in detail
    _error(
        client.post("/v1/analyze?channels=agent", content=data, headers=WAV),
        422,
        "channels_mismatch",
    )
    _error(
        client.post("/v1/analyze?channels=boss,agent", content=data, headers=WAV),
        400,
        "bad_channels",
    )
    r = client.post("/v1/analyze", content=data[: len(data) // 3], headers=WAV)  # cut short
    assert r.status_code == 200, "a truncated WAV is analysed as far as it goes"
    assert r.json()["seconds"] < 0.4 * len(data) / 4 / RATE


def test_agents_are_analysed_when_the_policy_says_so_and_never_decoded_otherwise(
    voice_repo: ModelRepository,  # noqa: F811
    call: tuple[bytes, float, float],
    has_voice_model: ModelRepository,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, seconds, _ = call
    calls = CallsConfig(analyse_roles=["agent", "customer"])
    with TestClient(create_app(Settings(model_root=voice_repo.root, calls=calls))) as c:
        body = c.post("/v1/analyze?channels=agent,customer", content=data, headers=WAV).json()
    roles = {m["role"] for m in body["voice"] if m["speech"]}
    assert roles == {"agent", "customer"}
    assert body["summary"]["roles"]["agent"]["analysed"] is True
    resampled: list[int] = []
    inner = audio.Resampler.__call__

    def counting(self: audio.Resampler, frame: av.AudioFrame | None) -> np.ndarray:
        resampled.append(1)
        return inner(self, frame)

    monkeypatch.setattr(audio.Resampler, "__call__", counting)
    with _client(voice_repo.root) as c:  # both channels agents: nothing is decoded at all
        r = c.post("/v1/analyze?channels=agent,agent", content=data, headers=WAV)
    assert resampled == [], "only the packets' durations were read"
    assert r.status_code == 200 and r.json()["voice"] == []
    agent = r.json()["summary"]["roles"]["agent"]
    assert agent["analysed"] is False and agent["tracks"] == ["0", "1"]
    assert agent["audio_s"] == pytest.approx(2 * seconds, abs=0.02)  # two tracks' seconds


def test_a_token_is_needed_when_tokens_are_set(voice_repo: ModelRepository) -> None:  # noqa: F811
    settings = Settings(model_root=voice_repo.root, server=ServerConfig(api_tokens="secret1"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        _error(c.post("/v1/analyze", content=b"x", headers=WAV), 401, "unauthorized")


def test_a_video_with_sound_gives_faces_and_voice(
    client: TestClient,
    media: Path,
    tmp_path: Path,
    clip: np.ndarray,  # noqa: F811
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    video = talking_video(tmp_path / "talk.mp4", media, clip)
    r = client.post("/v1/analyze", files={"file": ("talk.mp4", video.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    body = r.json()
    faces = body["face"]
    assert len(faces) == 30 and sum(1 for m in faces if m["faces"]) >= 25
    assert [m["seq"] for m in faces] == list(range(30)) and faces[0]["pts"] == 0.0
    assert body["voice"] and any(m["speech"] for m in body["voice"])
    assert body["summary"]["roles"]["unknown"]["audio_s"] > 1.5
    with _client(has_voice_model.root, max_recording_s=1) as short:
        r = short.post(
            "/v1/analyze", content=video.read_bytes(), headers={"content-type": "video/mp4"}
        )
    assert "header" in _error(r, 413, "too_long"), "refused before a frame is decoded"


def test_the_decode_is_chunked_into_the_windower(
    client: TestClient,
    call: tuple[bytes, float, float],
    has_voice_model: ModelRepository,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An hour costs a minute's memory because the windower gets the file a second at a
    time (docs/BENCHMARKS.md has the figures): here, many chunks of about a second."""
    data, seconds, _ = call
    pushed: list[int] = []
    inner = Windower.push

    def counting(self: Windower, samples: np.ndarray, time: float | None = None) -> list:
        pushed.append(len(samples))
        return inner(self, samples, time)

    monkeypatch.setattr(Windower, "push", counting)
    r = client.post("/v1/analyze?channels=customer,customer", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    assert len(pushed) >= 2 * int(seconds), "each track, chunk by chunk"
    assert max(pushed) < 2 * RATE and sum(pushed) == pytest.approx(2 * seconds * RATE, abs=64)


def test_the_cli_splits_channels_and_prints_the_summary(
    call: tuple[bytes, float, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    data, seconds, _ = call
    recording = tmp_path / "call.wav"
    recording.write_bytes(data)
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(has_voice_model.root))
    runner = CliRunner()
    r = runner.invoke(
        app, ["analyze", "--channels", "agent,customer", "--format", "jsonl", str(recording)]
    )
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    *voice, summary = lines
    assert voice and {(m["type"], m["role"]) for m in voice} == {("voice", "customer")}
    assert summary["type"] == "summary" and summary["transport"] == "file"
    assert summary["roles"]["agent"]["analysed"] is False
    assert summary["roles"]["agent"]["audio_s"] == pytest.approx(seconds, abs=0.01)
    assert summary["roles"]["customer"]["windows"] == sum(m["speech"] for m in voice)
    assert "track agent (agent) is not analysed" in r.stderr
    text = runner.invoke(app, ["analyze", "--channels", "agent,customer", str(recording)])
    assert text.exit_code == 0, text.stderr
    block = text.stdout[text.stdout.index("call summary") :]
    assert "agent: not analysed" in block and "customer: " in block and "mostly " in block
    bad = runner.invoke(app, ["analyze", "--channels", "agent,boss", str(recording)])
    assert bad.exit_code == 2 and "boss" in bad.stderr
