"""Issue 23: ``POST /v1/predict`` finds faces as ``emostream analyze`` does, takes
``?range=``, and every REST endpoint refuses a query parameter it does not take.

Real models and the six-person photo of the shared media (skipped when absent); the
unknown-parameter refusals need no model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from shared_media import media_file

from emostream.analyze_range import (
    ANALYZE_RANGE,
    OFFLINE_DETECT_EVERY,
    DetectorRange,
    RangeNotApplicableError,
    analyze_settings,
)
from emostream.models.detectors.plugins.blazeface import BlazeFaceConfig
from emostream.models.detectors.plugins.haar import HaarConfig
from emostream.models.detectors.plugins.yunet import YuNetConfig
from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.app import create_app

JPEG = {"content-type": "image/jpeg"}


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    return str(body["detail"])


@pytest.fixture(scope="module")
def client(repo: ModelRepository) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_root=repo.root)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def six() -> bytes:
    return media_file("six_people_table.jpg").read_bytes()


def test_one_decision_for_cli_and_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMOSTREAM_DETECTOR__RANGE", raising=False)
    chosen = analyze_settings(Settings()).detector
    assert isinstance(chosen, YuNetConfig) and chosen.range == ANALYZE_RANGE.value
    near = analyze_settings(Settings(), "near").detector
    assert isinstance(near, YuNetConfig) and near.range == "near"
    blaze = analyze_settings(Settings(detector=BlazeFaceConfig())).detector
    assert isinstance(blaze, BlazeFaceConfig) and blaze.range == ANALYZE_RANGE.value
    haar = Settings(detector=HaarConfig())
    assert analyze_settings(haar).detector is haar.detector  # no range: kept
    assert analyze_settings(Settings()).tracking.detect_every == OFFLINE_DETECT_EVERY
    monkeypatch.setenv("EMOSTREAM_TRACKING__DETECT_EVERY", "3")  # the setting wins
    assert analyze_settings(Settings()).tracking.detect_every == 3
    with pytest.raises(RangeNotApplicableError, match="haar"):
        analyze_settings(haar, DetectorRange.far)


def test_predict_finds_the_six_faces_analyze_finds(client: TestClient, six: bytes) -> None:
    default = client.post("/v1/predict", content=six, headers=JPEG)
    assert default.status_code == 200, default.text
    assert len(default.json()["faces"]) == 6
    far = client.post("/v1/predict?range=far", content=six, headers=JPEG)
    assert far.status_code == 200 and len(far.json()["faces"]) == 6
    near = client.post("/v1/predict?range=near", content=six, headers=JPEG)
    assert near.status_code == 200 and len(near.json()["faces"]) < 6  # the live detector


@pytest.mark.parametrize("name", ["six_people_table.jpg", "two_people.jpg", "no-faces.jpg"])
def test_predict_and_analyze_give_the_same_faces(client: TestClient, name: str) -> None:
    """The same boxes and labels from ``POST /v1/predict`` and ``emostream analyze``."""
    import json

    from typer.testing import CliRunner

    from emostream.cli import app

    path = media_file(name)
    r = client.post("/v1/predict", content=path.read_bytes(), headers=JPEG)
    assert r.status_code == 200, r.text
    cli = CliRunner().invoke(app, ["analyze", str(path), "--quiet", "--format", "jsonl"])
    assert cli.exit_code == 0, cli.output
    analyzed = json.loads(cli.stdout.splitlines()[0])

    def faces(msg: dict[str, object]) -> list[tuple[object, ...]]:
        found = msg["faces"]
        assert isinstance(found, list)
        return sorted((tuple(f["box"]), f["label"]) for f in found)

    assert faces(r.json()) == faces(analyzed)


def test_detectors_are_built_once_per_range(client: TestClient, six: bytes) -> None:
    state = client.app.state.emostream  # type: ignore[attr-defined]
    for _ in range(2):
        for r in ("far", "auto"):
            assert client.post(f"/v1/predict?range={r}", content=six, headers=JPEG).is_success
    built = state.predict_detectors._built
    assert len(built) == 2  # far and auto; near is the live detector itself
    live = state.face
    assert state.predict_detectors.analyzer(live, DetectorRange.near) is live


def test_a_bad_range_is_422(client: TestClient, six: bytes) -> None:
    r = client.post("/v1/predict?range=wide", content=six, headers=JPEG)
    assert "range" in _error(r, 422, "invalid_request")


def test_range_on_a_detector_without_one_is_422(repo: ModelRepository, six: bytes) -> None:
    settings = Settings(model_root=repo.root, detector=HaarConfig())
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.post("/v1/predict?range=far", content=six, headers=JPEG)
        assert "haar" in _error(r, 422, "range_not_applicable")
        assert c.post("/v1/predict", content=six, headers=JPEG).status_code == 200


def test_range_is_in_the_openapi(client: TestClient) -> None:
    params = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["parameters"]
    (rng,) = [p for p in params if p["name"] == "range"]
    assert rng["in"] == "query" and "far" in rng["description"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/predict?rnage=far"),
        ("POST", "/v1/analyze?fsp=5"),
        ("GET", "/healthz?verbose=1"),
        ("GET", "/readyz?x=1"),
        ("GET", "/metrics?x=1"),
        ("POST", "/v1/offer?x=1"),
        ("POST", "/whip?rols=0:agent"),
    ],
)
def test_unknown_query_parameter_is_422_naming_it(tmp_path: Path, method: str, path: str) -> None:
    root = tmp_path / "no-models"
    root.mkdir()
    with TestClient(create_app(Settings(model_root=root)), raise_server_exceptions=False) as c:
        r = c.request(method, path, content=b"x")
    name = path.split("?")[1].split("=")[0]
    assert repr(name) in _error(r, 422, "unknown_parameter")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/sessions/abc?x=1"),
        ("GET", "/v1/sessions/abc/events?x=1"),
        ("DELETE", "/v1/sessions/abc?x=1"),
    ],
)
def test_the_credential_and_the_session_come_before_an_unknown_parameter(
    tmp_path: Path, method: str, path: str
) -> None:
    """Someone without a valid token gets the 401, someone else's (or no) session the 404:
    the 422 naming the parameters waits for the auth layer."""
    root = tmp_path / "no-models"
    root.mkdir()
    with TestClient(create_app(Settings(model_root=root)), raise_server_exceptions=False) as c:
        _error(c.request(method, path), 404, "unknown_session")
    closed = Settings(model_root=root, server={"api_tokens": ["secret-token"]})  # type: ignore[arg-type]
    with TestClient(create_app(closed), raise_server_exceptions=False) as c:
        _error(c.request(method, path), 401, "unauthorized")
        r = c.post("/v1/predict?x=1", content=b"x", headers={"authorization": "Bearer wrong"})
        _error(r, 401, "unauthorized")
        r = c.post(
            "/v1/predict?x=1", content=b"x", headers={"authorization": "Bearer secret-token"}
        )
        assert "'x'" in _error(r, 422, "unknown_parameter")


def test_known_parameters_and_the_demo_page_pass(client: TestClient, six: bytes) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/?utm_source=x").status_code == 200  # a page, not the API
    r = client.post("/v1/predict?detect=false&range=near", content=six, headers=JPEG)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    r = client.post("/whip?roles=0:agent", content=b"v=0", headers={"content-type": "text/x"})
    assert r.json()["error"] == "unsupported_media_type"  # roles passed the check
    assert client.get("/healthz?token=abc").status_code == 200  # read by auth, where it is
    r = client.post("/v1/predict?token=abc", content=six, headers=JPEG)
    _error(r, 401, "token_in_query")  # auth's own refusal, not ours
