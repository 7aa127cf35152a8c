"""`emostream client` refusing bad sources, and CORS on the signalling API.

None of these reaches the point of creating a peer connection, so they run outside the
network namespace; streaming itself is tested in tests/webrtc.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from emostream.cli import EXIT_FAILED_FILES, EXIT_USAGE, app
from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.app import create_app


def test_client_needs_exactly_one_source() -> None:
    r = CliRunner().invoke(app, ["client"])
    assert r.exit_code == EXIT_USAGE and "exactly one source" in r.stderr
    r = CliRunner().invoke(app, ["client", "a.mp4", "--camera", "0"])
    assert r.exit_code == EXIT_USAGE


def test_client_reports_a_missing_file(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["client", str(tmp_path / "nope.mp4")])
    assert r.exit_code == EXIT_FAILED_FILES and "no such file" in r.stderr


def test_client_reports_a_missing_camera() -> None:
    r = CliRunner().invoke(app, ["client", "--camera", "97"])
    assert r.exit_code == EXIT_FAILED_FILES and "camera 97" in r.stderr


def test_client_reports_a_missing_microphone() -> None:
    try:
        import sounddevice as sd

        if any(d["max_input_channels"] > 0 for d in sd.query_devices()):
            pytest.skip("this machine has a microphone")
    except OSError:
        pass  # no PortAudio at all: the client must say so too
    r = CliRunner().invoke(app, ["client", "--mic"])
    assert r.exit_code == EXIT_FAILED_FILES and "microphone" in r.stderr


def test_cors_is_off_by_default_and_follows_the_setting(repo: ModelRepository) -> None:
    origin = "https://agent-desktop.example"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization",
    }
    with TestClient(create_app(Settings(model_root=repo.root))) as plain:
        r = plain.options("/v1/offer", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(Settings(model_root=repo.root, cors_origins=[origin]))) as c:
        r = c.options("/v1/offer", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == origin
        r = c.get("/healthz", headers={"Origin": origin})
        assert r.headers["access-control-allow-origin"] == origin
        assert "Location" in r.headers["access-control-expose-headers"]  # WHIP clients


def test_voice_messages_in_the_text_format() -> None:
    from emostream.cli.client import voice_line
    from emostream.schema import VoiceMessage

    speech = VoiceMessage(
        track="1",
        start=2.0,
        end=3.5,
        speech=True,
        scores={"angry": 0.9, "calm": 0.1},
        label="angry",
        confidence=0.9,
        latency_ms=12.0,
    )
    silence = VoiceMessage(track="0", start=0.5, end=2.0, speech=False, latency_ms=0.1)
    assert voice_line(speech) == "   2.000s-3.500s voice[1] angry 0.90"
    assert voice_line(silence) == "   0.500s-2.000s voice[0] silence"
    guess = speech.model_copy(update={"confidence": 0.4, "unsure": True})
    assert voice_line(guess) == "   2.000s-3.500s voice[1] unsure (angry? 0.40)"
