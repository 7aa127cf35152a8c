"""Every error reply is ``{error, detail}`` JSON, and JSON too deep to parse is a 400.

Issue 12: 404 (unknown path) and 405 (wrong method) came back as FastAPI's
``{"detail": "Not Found"}``; a 2 kB ``/v1/offer`` body nested 1,000 deep was a 500
(``RecursionError`` in ``json.loads``). In-process (TestClient); no offer here reaches
aiortc: each is refused before a peer connection would be made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from emostream import safejson
from emostream.settings import Settings
from emostream.stream.app import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """No models: what is tested here answers before any model or session is needed."""
    root = tmp_path_factory.mktemp("no-models")
    app = create_app(Settings(model_root=Path(root)))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"].strip()
    return str(body["detail"])


@pytest.mark.parametrize(
    "path", ["/nope", "/v1", "/v1/sessions/x/events/more", "/static/missing.js", "/whip/a/b"]
)
def test_unknown_paths_are_404_json(client: TestClient, path: str) -> None:
    assert path in _error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/offer", "POST"),
        ("PUT", "/whip", "POST"),
        ("POST", "/healthz", "GET"),
        ("GET", "/v1/predict", "POST"),
        ("DELETE", "/metrics", "GET"),
    ],
)
def test_wrong_methods_are_405_json_and_keep_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    detail = _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow
    assert method in detail and allow in detail


def test_404s_of_made_up_paths_add_no_metric_labels(client: TestClient) -> None:
    """The rejected-requests counter is labelled by route, never by the path a client sent."""
    for i in range(5):
        client.get(f"/made-up-{i}")
    text = client.get("/metrics").text
    endpoints = {
        s.labels["endpoint"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "emostream_requests_rejected_total"
    }
    assert "other" in endpoints
    assert not any("made-up" in e for e in endpoints), endpoints


def _nested(depth: int) -> str:
    return '{"sdp": ' + "[" * depth + "]" * depth + ', "type": "offer"}'


def test_json_nested_1000_deep_is_a_400_not_a_500(client: TestClient) -> None:
    body = _nested(1000)
    assert len(body) < 2100  # the 2 kB body
    detail = _error(client.post("/v1/offer", content=body), 400, "bad_offer")
    assert "nested more than 32 levels deep" in detail


@pytest.mark.parametrize("depth", [32, 33_000])  # 33 levels deep; 66 kB, under the limit
def test_deep_json_up_to_the_body_limit_is_a_400(client: TestClient, depth: int) -> None:
    _error(client.post("/v1/offer", content=_nested(depth)), 400, "bad_offer")


def test_json_over_the_body_limit_is_a_413(client: TestClient) -> None:
    _error(client.post("/v1/offer", content=_nested(70_000)), 413, "body_too_large")


def test_shallow_json_gets_past_the_depth_check(client: TestClient) -> None:
    """32 levels (the object, 31 arrays): parsed, then refused as not an offer."""
    detail = _error(client.post("/v1/offer", content=_nested(31)), 400, "bad_offer")
    assert "nested" not in detail


# -- the depth check itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "]]]"]', 1),  # brackets in strings do not count
        ('["\\"[[", {"k\\\\": "{"}]', 2),  # nor after escaped quotes and backslashes
        ("[" * 5 + "]" * 5 + "[" * 3 + "]" * 3, 5),
    ],
)
def test_depth_counts_only_brackets_outside_strings(text: str, depth: int) -> None:
    assert safejson.depth(text) == depth


def test_loads_refuses_deep_json_before_parsing() -> None:
    with pytest.raises(safejson.TooDeepError, match="more than 32"):
        safejson.loads("[" * 1000 + "]" * 1000)
    with pytest.raises(ValueError, match="more than 2"):  # an unterminated document too
        safejson.loads(b"[[[", max_depth=2)
    assert safejson.loads(b'{"a": [[1]]}', max_depth=3) == {"a": [[1]]}


def test_loads_reads_what_json_loads_reads() -> None:
    """Same input types and encodings (bytes in UTF-8/16), same ValueErrors for bad JSON."""
    assert safejson.loads('{"sdp": "x"}'.encode("utf-16")) == {"sdp": "x"}
    assert safejson.loads('"\\u00e9"') == "é"
    for bad in (b"{not json", b"\xff\xfe\x00", b'"unterminated'):
        with pytest.raises(ValueError):
            safejson.loads(bad)


def test_loads_refuses_a_lone_surrogate() -> None:
    """``"\\udcff"`` is valid JSON syntax but no text: in a str it cannot be encoded
    again, so a Twilio custom parameter or an AudioHook participant holding one broke
    every JSON answer naming it (the call's summary). A pair (an emoji) is text. Found by
    tests/test_fuzz_calls.py."""
    for bad in ('"\\udcff"', '{"p": "a\\ud800"}', '{"\\uDFFF": 1}', '["\\ude00\\ud83d"]'):
        with pytest.raises(ValueError, match="surrogate"):
            safejson.loads(bad)
    assert safejson.loads('"\\ud83d\\ude00"') == "\U0001f600"
    assert safejson.loads('"\\\\udcff"') == "\\udcff"  # an escaped backslash: no escape


def test_an_unexpected_exception_is_a_json_500_not_plain_text(tmp_path: Path) -> None:
    """A bug of ours must not answer in another shape (the fuzz suite calls any 5xx a bug)."""
    app = create_app(Settings(model_root=tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        _error(c.get("/boom"), 500, "internal_error")


def test_a_401_names_the_bearer_scheme(tmp_path: Path) -> None:
    app = create_app(Settings(model_root=tmp_path, server={"api_tokens": ["s3cret"]}))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/offer", json={"sdp": "v=0", "type": "offer"})
        _error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer ")
