"""Who may call what (stream/auth.py, docs/SECURITY.md), in-process: no WebRTC offer here.

Issue 12 defect 7 (a non-ASCII token was a 500 on every guarded endpoint) and defect 9
(``/v1/predict``, ``/metrics``, ``/docs`` and ``/openapi.json`` open with tokens set;
``?token=`` read everywhere and written to the access log). Per-session ownership with
real sessions is tests/webrtc/test_session_auth.py; here the same rules run on
``Guard.session`` directly, with sessions that only carry an owner and a secret.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.requests import Request

from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.app import create_app
from emostream.stream.auth import Guard
from emostream.stream.errors import ApiError
from emostream.stream.logs import RedactTokens, redact
from emostream.stream.server_config import ServerConfig

TOKENS = "secret1,clé-2"  # one ASCII token, one that is not
BEARER = {"Authorization": "Bearer secret1"}

#: Every endpoint that touches media or sessions, and the schema: (method, path).
GUARDED = [
    ("POST", "/v1/offer"),
    ("POST", "/whip"),
    ("DELETE", "/whip/nope"),
    ("PATCH", "/whip/nope"),
    ("GET", "/v1/sessions/nope"),
    ("DELETE", "/v1/sessions/nope"),
    ("GET", "/v1/sessions/nope/events"),
    ("POST", "/v1/predict"),
    ("POST", "/v1/analyze"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", np.full((120, 160, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def _client(**server: Any) -> TestClient:
    settings = Settings(server=ServerConfig(**server))
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return str(body["detail"])


@pytest.fixture(scope="module")
def closed(repo: ModelRepository) -> Iterator[TestClient]:
    """API tokens set, the real models loaded (so /v1/predict can answer 200)."""
    settings = Settings(model_root=repo.root, server=ServerConfig(api_tokens=TOKENS))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


# -- defect 7: any token that is not ours is a 401, never a 500 ----------------------------


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize("header", ["Bearer é".encode(), "Bearer \u00e9\u00e9".encode("latin-1")])
def test_a_non_ascii_bearer_token_is_a_401(
    closed: TestClient, method: str, path: str, header: bytes
) -> None:
    r = closed.request(method, path, headers={"Authorization": header})  # type: ignore[dict-item]
    _error(r, 401, "unauthorized")


def test_a_non_ascii_query_token_on_the_events_is_a_401(closed: TestClient) -> None:
    _error(closed.get("/v1/sessions/nope/events?token=%C3%A9"), 401, "unauthorized")
    _error(closed.get("/v1/sessions/nope/events?token=%FF%FE"), 401, "unauthorized")


def test_a_non_ascii_token_of_ours_is_accepted(closed: TestClient) -> None:
    ours = {"Authorization": "Bearer clé-2".encode()}
    r = closed.post("/v1/predict", content=_png(), headers={**ours, "content-type": "image/png"})
    assert r.status_code == 200, r.text  # compared as UTF-8 bytes, both sides
    r = closed.get("/v1/sessions/nope/events?token=cl%C3%A9-2")
    _error(r, 404, "unknown_session")  # authenticated: only then the session is looked up


@pytest.mark.parametrize(
    "header", ["Basic c2VjcmV0MTo=", "Bearer", "Bearer    ", "", "Token secret1", "secret1"]
)
def test_a_malformed_authorization_header_is_a_401_with_the_reason(
    closed: TestClient, header: str
) -> None:
    detail = _error(
        closed.get("/v1/sessions/nope", headers={"Authorization": header}),
        401,
        "bad_authorization",
    )
    assert "Bearer" in detail


def test_missing_and_wrong_tokens(closed: TestClient) -> None:
    for method, path in GUARDED:
        _error(closed.request(method, path), 401, "unauthorized")
        r = closed.request(method, path, headers={"Authorization": "Bearer secret"})
        _error(r, 401, "unauthorized")  # a prefix of a real token is no token


# -- defect 9: every endpoint that touches media or sessions is guarded --------------------


def test_predict_needs_a_token(closed: TestClient) -> None:
    png = {"content-type": "image/png"}
    _error(closed.post("/v1/predict", content=_png(), headers=png), 401, "unauthorized")
    r = closed.post("/v1/predict", content=_png(), headers={**BEARER, **png})
    assert r.status_code == 200 and r.json()["type"] == "face", r.text


def test_the_schema_needs_a_token_and_the_docs_are_off(closed: TestClient) -> None:
    _error(closed.get("/openapi.json"), 401, "unauthorized")
    schema = closed.get("/openapi.json", headers=BEARER)
    assert schema.status_code == 200 and "/v1/predict" in schema.json()["paths"]
    assert "session_token" in schema.json()["components"]["schemas"]["Answer"]["properties"]
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert closed.get(page, headers=BEARER).status_code == 404, page


def test_without_tokens_the_docs_stay_open() -> None:
    with _client() as c:
        assert c.get("/docs").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_pages_and_probes_stay_open(closed: TestClient) -> None:
    for path in ("/", "/static/app.js", "/healthz", "/readyz", "/?token=secret1"):
        assert closed.get(path).status_code == 200, path
    body = closed.get("/readyz").text
    assert "secret1" not in body and "clé" not in body


def test_sessions_of_a_server_without_models_are_guarded_first(tmp_path: Path) -> None:
    root = tmp_path / "no-models"
    root.mkdir()
    settings = Settings(model_root=root, server=ServerConfig(api_tokens="secret1"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        _error(c.get("/v1/sessions/nope"), 401, "unauthorized")  # not 503: nothing leaks
        _error(c.get("/v1/sessions/nope", headers=BEARER), 404, "unknown_session")


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_need_an_api_token_when_tokens_are_set(closed: TestClient) -> None:
    _error(closed.get("/metrics"), 401, "unauthorized")
    r = closed.get("/metrics", headers=BEARER)
    assert r.status_code == 200 and "emostream_" in r.text


def test_metrics_take_their_own_token() -> None:
    with _client(api_tokens="secret1", metrics_token="scrape-me") as c:
        _error(c.get("/metrics"), 401, "unauthorized")
        _error(c.get("/metrics", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        for token in ("scrape-me", "secret1"):
            r = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and "emostream_" in r.text, token
        r = c.post("/v1/predict", headers={"Authorization": "Bearer scrape-me"})
        _error(r, 401, "unauthorized")  # the metrics token opens /metrics only


def test_a_metrics_token_alone_guards_only_the_metrics() -> None:
    with _client(metrics_token="scrape-me") as c:
        _error(c.get("/metrics"), 401, "unauthorized")
        assert c.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200
        _error(c.get("/v1/sessions/nope"), 404, "unknown_session")  # the rest stays open


def test_metrics_on_their_own_port_leave_the_main_one(free_port: int) -> None:
    with _client(api_tokens="secret1", metrics_port=free_port) as c:
        assert c.get("/metrics", headers=BEARER).status_code == 404
        r = httpx.get(f"http://127.0.0.1:{free_port}/metrics", trust_env=False, timeout=5)
        assert r.status_code == 200 and "emostream_" in r.text
    with pytest.raises(httpx.ConnectError):  # the listener ends with the app
        httpx.get(f"http://127.0.0.1:{free_port}/metrics", trust_env=False, timeout=2)


def test_a_metrics_token_on_an_unauthenticated_listener_is_refused() -> None:
    with pytest.raises(ValidationError, match="metrics_host"):
        ServerConfig(metrics_token="x", metrics_port=9100)


# -- ?token= only on the events stream -------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [g for g in GUARDED if not g[1].endswith("/events")])
def test_a_query_token_is_refused_outside_the_events(
    closed: TestClient, method: str, path: str
) -> None:
    r = closed.request(method, f"{path}?token=secret1", headers=BEARER)
    assert "Authorization" in _error(r, 401, "token_in_query")


def test_a_query_token_is_refused_on_an_open_server_too() -> None:
    with _client() as c:
        _error(c.delete("/v1/sessions/nope?token=x"), 401, "token_in_query")
        _error(c.get("/v1/sessions/nope/events?token=x"), 404, "unknown_session")
        basic = {"Authorization": "Basic x"}  # an open server ignores a proxy's header
        _error(c.get("/v1/sessions/nope", headers=basic), 404, "unknown_session")


def test_the_events_take_a_query_token(closed: TestClient) -> None:
    _error(closed.get("/v1/sessions/nope/events?token=secret1"), 404, "unknown_session")


# -- per-session rules, on Guard.session --------------------------------------------------


def _request(headers: dict[str, str] | None = None, query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "GET", "path": "/", "headers": raw}
    return Request({**scope, "query_string": query.encode()})


def _session(guard: Guard, token: str | None) -> Any:
    owner = guard.caller(_request({"Authorization": f"Bearer {token}"})) if token else None
    return SimpleNamespace(owner=owner, secret="s3ss10n-secret")


def _verdict(guard: Guard, session: Any, headers: dict[str, str] | None, query: str = "") -> int:
    try:
        guard.session(_request(headers, query), session, "sid", query=bool(query))
    except ApiError as exc:
        return exc.status
    return 200


def test_a_session_answers_its_creator_and_its_own_token_only() -> None:
    guard = Guard(ServerConfig(api_tokens="tok-a,tok-b"))
    mine = _session(guard, "tok-a")

    def bearer(t: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {t}"}

    assert _verdict(guard, mine, bearer("tok-a")) == 200
    assert _verdict(guard, mine, bearer("s3ss10n-secret")) == 200
    assert _verdict(guard, mine, None, "token=s3ss10n-secret") == 200  # the events
    assert _verdict(guard, mine, bearer("tok-b")) == 404  # as if it did not exist
    assert _verdict(guard, None, bearer("tok-b")) == 404
    assert _verdict(guard, mine, bearer("other-secret")) == 401
    assert _verdict(guard, None, bearer("s3ss10n-secret")) == 401  # same as an existing one
    assert _verdict(guard, mine, None) == 401
    other = _session(guard, "tok-b")
    assert _verdict(guard, other, bearer("s3ss10n-secret")) == 200  # its own secret


def test_an_open_server_can_still_require_the_session_token() -> None:
    relaxed, strict = Guard(ServerConfig()), Guard(ServerConfig(session_token_required=True))
    session = _session(relaxed, None)
    assert _verdict(relaxed, session, None) == 200  # the LAN demo: no friction
    assert _verdict(relaxed, None, None) == 404
    assert _verdict(strict, session, None) == 401
    assert _verdict(strict, session, {"Authorization": "Bearer nope"}) == 401
    assert _verdict(strict, None, {"Authorization": "Bearer nope"}) == 401
    assert _verdict(strict, session, {"Authorization": "Bearer s3ss10n-secret"}) == 200


# -- no token in any log ----------------------------------------------------------------------


def test_redact_hides_every_token_parameter() -> None:
    line = '127.0.0.1:5 - "GET /v1/sessions/x/events?a=1&token=secret1&%74oken=secret1 HTTP/1.1"'
    assert "secret1" not in redact(line)
    assert redact("/x?tokens=1&b=2") == "/x?tokens=1&b=2"
    assert redact("/?session_token=abc&access_token=def") == "/?session_token=***&access_token=***"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_access_log_of_a_real_server_carries_no_token(free_port: int) -> None:
    """uvicorn, on a loopback port, with its own logging config (as ``emostream serve``)."""
    app = create_app(Settings(server=ServerConfig(api_tokens="secret1")))
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port, log_level="info")
    access = logging.getLogger("uvicorn.access")
    assert any(isinstance(f, RedactTokens) for f in access.filters)
    capture = _Capture()
    access.addHandler(capture)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{free_port}"
        urls = [
            "/v1/sessions/x/events?token=secret1",
            "/v1/sessions/x?token=secret1",
            "/v1/predict?detect=false&token=secret1",
            "/?token=secret1",
            "/healthz?%74oken=secret1",
            "/metrics?token=secret1",
        ]
        with httpx.Client(base_url=base, trust_env=False, timeout=10) as http:
            statuses = [http.get(u).status_code for u in urls]
        assert statuses == [404, 401, 405, 200, 200, 401]
    finally:
        server.should_exit = True
        thread.join(30)
        access.removeHandler(capture)
    assert len(capture.lines) == len(urls), capture.lines
    assert all("oken=***" in line for line in capture.lines), capture.lines
    assert not any("secret1" in line for line in capture.lines), capture.lines
