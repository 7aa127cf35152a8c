"""`emostream dashboards push` against a fake Grafana HTTP API on 127.0.0.1.

Grafana cannot be installed here, so a small http.server answers the endpoints grafana-client
calls for a push (folders by uid, folder list, create folder, save dashboard) the way
Grafana's HTTP API documents them, and records every request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from emostream.cli import app
from emostream.dashboards import catalog
from emostream.dashboards.push import (
    MESSAGE,
    PROVISIONED_DATASOURCE,
    folder_uid_for,
    payload,
    rewrite_datasource,
)

DS = dict(PROVISIONED_DATASOURCE)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """Grafana's folder and dashboard API, in memory; ``refuse`` answers everything with it."""

    folders: dict[str, str] = field(default_factory=dict)  # uid -> title
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    refuse: tuple[int, str] | None = None
    url: str = ""

    def handle(self, req: Request) -> tuple[int, Any]:
        self.requests.append(req)
        if self.refuse:
            return self.refuse[0], {"message": self.refuse[1]}
        parts = req.path.split("?")[0].strip("/").split("/")
        if req.method == "GET" and parts == ["api", "folders"]:
            return 200, [
                {"id": i, "uid": u, "title": t} for i, (u, t) in enumerate(self.folders.items())
            ]
        if req.method == "GET" and parts[:2] == ["api", "folders"] and len(parts) == 3:
            if parts[2] not in self.folders:
                return 404, {"message": "folder not found", "status": "not-found"}
            return 200, {"id": 1, "uid": parts[2], "title": self.folders[parts[2]]}
        if req.method == "POST" and parts == ["api", "folders"]:
            title, uid = req.body["title"], req.body.get("uid") or "generated"
            if title in self.folders.values() or uid in self.folders:
                return 409, {"message": "a folder with the same name already exists"}
            self.folders[uid] = title
            return 200, {"id": len(self.folders), "uid": uid, "title": title}
        if req.method == "POST" and parts == ["api", "dashboards", "db"]:
            dash = req.body["dashboard"]
            if req.body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            self.dashboards[dash["uid"]] = req.body
            slug = dash["title"].lower().replace(" ", "-")
            return 200, {
                "id": 7,
                "uid": dash["uid"],
                "url": f"/d/{dash['uid']}/{slug}",
                "status": "success",
                "version": 1,
            }
        return 404, {"message": "Not found"}

    def posted(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]


@pytest.fixture()
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            req = Request(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            status, body = fake.handle(req)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Grafana settings from the caller's shell; no proxy between us and 127.0.0.1."""
    for name in list(os.environ):
        if name.startswith("EMOSTREAM_GRAFANA_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def _dashboard(uid: str, title: str, ds: dict[str, str] | None = None) -> dict[str, Any]:
    ds = ds or DS
    return {
        "id": 42,
        "uid": uid,
        "title": title,
        "panels": [
            {
                "id": 1,
                "type": "row",
                "title": "row",
                "panels": [
                    {
                        "id": 2,
                        "type": "stat",
                        "title": "inner",
                        "datasource": dict(ds),
                        "targets": [{"refId": "A", "expr": "up", "datasource": dict(ds)}],
                    }
                ],
            },
            {
                "id": 3,
                "type": "timeseries",
                "title": "outer",
                "datasource": dict(ds),
                "targets": [{"refId": "A", "expr": "up", "datasource": dict(ds)}],
            },
        ],
        "templating": {
            "list": [{"name": "model", "type": "query", "datasource": dict(ds), "query": "x"}]
        },
    }


@pytest.fixture()
def dash_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "dashboards"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(_dashboard("dash-a", "Dash A")))
    (folder / "b.json").write_text(json.dumps(_dashboard("dash-b", "Dash B")))
    return folder


def _push(*args: str) -> Result:
    return CliRunner().invoke(app, ["dashboards", "push", *args])


def _no_traceback(r: Result) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output


def _datasource_uids(model: Any) -> list[str]:
    if isinstance(model, dict):
        own = [model["uid"]] if model.get("type") == "prometheus" and "uid" in model else []
        return own + [u for v in model.values() for u in _datasource_uids(v)]
    if isinstance(model, list):
        return [u for v in model for u in _datasource_uids(v)]
    return []


# --- the pure parts -----------------------------------------------------------------------


def test_rewrite_datasource_everywhere_and_only_the_provisioned_one() -> None:
    model = _dashboard("d", "D")
    model["panels"].append(
        {
            "id": 9,
            "type": "stat",
            "title": "loki",
            "datasource": {"type": "loki", "uid": "prometheus"},
        }
    )
    before = json.dumps(model)
    out = rewrite_datasource(model, "PBFA97CFB590B2093")
    assert json.dumps(model) == before, "the input must not change"
    assert _datasource_uids(out) == ["PBFA97CFB590B2093"] * 5
    assert out["panels"][2]["datasource"] == {"type": "loki", "uid": "prometheus"}
    assert out["templating"]["list"][0]["datasource"]["uid"] == "PBFA97CFB590B2093"


def test_payload_is_portable_and_overwrites(tmp_path: Path) -> None:
    d = catalog.Dashboard(tmp_path / "a.json", _dashboard("dash-a", "Dash A"))
    body = payload(d, "emostream")
    assert body["overwrite"] is True and body["folderUid"] == "emostream"
    assert body["message"] == MESSAGE
    assert body["dashboard"]["id"] is None and body["dashboard"]["uid"] == "dash-a"
    assert d.model["id"] == 42, "the loaded model must not change"
    assert _datasource_uids(body) == ["prometheus"] * 5
    assert _datasource_uids(payload(d, "f", "other")) == ["other"] * 5


def test_folder_uid_from_title() -> None:
    assert folder_uid_for("emostream") == "emostream"
    assert folder_uid_for("Emotion Stream / prod") == "emotion-stream-prod"


# --- the command against the fake Grafana ---------------------------------------------------


def test_push_creates_the_folder_and_posts_every_dashboard(
    grafana: FakeGrafana, dash_dir: Path
) -> None:
    r = _push("--url", grafana.url, "--token", "glsa_secret", "--dir", str(dash_dir))
    assert r.exit_code == 0, r.output
    assert [x.body for x in grafana.posted("/api/folders")] == [
        {"title": "emostream", "uid": "emostream"}
    ]
    bodies = [x.body for x in grafana.posted("/api/dashboards/db")]
    assert [b["dashboard"]["uid"] for b in bodies] == ["dash-a", "dash-b"]
    for b in bodies:
        assert b["overwrite"] is True and b["folderUid"] == "emostream"
        assert b["message"] == MESSAGE and b["dashboard"]["id"] is None
    assert all(x.headers.get("authorization") == "Bearer glsa_secret" for x in grafana.requests)
    assert r.stdout.splitlines() == [
        f"Dash A  dash-a  {grafana.url}/d/dash-a/dash-a",
        f"Dash B  dash-b  {grafana.url}/d/dash-b/dash-b",
    ]
    assert "anonymous" not in r.stderr


def test_an_existing_folder_is_not_created_again(grafana: FakeGrafana, dash_dir: Path) -> None:
    for _ in range(2):
        r = _push("--url", grafana.url, "--token", "t", "--dir", str(dash_dir))
        assert r.exit_code == 0, r.output
    assert len(grafana.posted("/api/folders")) == 1
    assert len(grafana.posted("/api/dashboards/db")) == 4
    assert "exists" in r.stderr


def test_a_provisioned_folder_with_another_uid_is_reused(
    grafana: FakeGrafana, dash_dir: Path
) -> None:
    grafana.folders["aBc123"] = "emostream"  # file provisioning gives folders random uids
    r = _push("--url", grafana.url, "--token", "t", "--dir", str(dash_dir))
    assert r.exit_code == 0, r.output
    assert grafana.posted("/api/folders") == []
    assert {x.body["folderUid"] for x in grafana.posted("/api/dashboards/db")} == {"aBc123"}


def test_folder_option_and_env_settings(
    grafana: FakeGrafana, dash_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOSTREAM_GRAFANA_URL", grafana.url)
    monkeypatch.setenv("EMOSTREAM_GRAFANA_TOKEN", "from-env")
    r = _push("--dir", str(dash_dir), "--folder", "Emotion Stream")
    assert r.exit_code == 0, r.output
    assert grafana.folders == {"emotion-stream": "Emotion Stream"}
    assert {x.headers["authorization"] for x in grafana.requests} == {"Bearer from-env"}


def test_datasource_uid_rewrites_every_reference(grafana: FakeGrafana, dash_dir: Path) -> None:
    r = _push(
        "--url", grafana.url, "--token", "t", "--dir", str(dash_dir), "--datasource-uid", "P1"
    )
    assert r.exit_code == 0, r.output
    for x in grafana.posted("/api/dashboards/db"):
        assert _datasource_uids(x.body) == ["P1"] * 5


def test_dry_run_sends_nothing(grafana: FakeGrafana, dash_dir: Path) -> None:
    r = _push("--url", grafana.url, "--dir", str(dash_dir), "--dry-run", "--datasource-uid", "P1")
    assert r.exit_code == 0, r.output
    assert grafana.requests == []
    posts = [ln for ln in r.stdout.splitlines() if ln.startswith("POST /api/dashboards/db ")]
    bodies = [json.loads(ln.split(" ", 2)[2]) for ln in posts]
    assert [b["dashboard"]["uid"] for b in bodies] == ["dash-a", "dash-b"]
    assert all(b["overwrite"] and _datasource_uids(b) == ["P1"] * 5 for b in bodies)
    assert "dry run" in r.stderr


def test_no_token_is_anonymous_with_a_warning(grafana: FakeGrafana, dash_dir: Path) -> None:
    r = _push("--url", grafana.url, "--dir", str(dash_dir))
    assert r.exit_code == 0, r.output
    assert all("authorization" not in x.headers for x in grafana.requests)
    assert "anonymous" in r.stderr


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_exits_4(grafana: FakeGrafana, dash_dir: Path, status: int) -> None:
    grafana.refuse = (status, "invalid API key")
    r = _push("--url", grafana.url, "--token", "wrong", "--dir", str(dash_dir))
    assert r.exit_code == 4, r.output
    assert "Grafana refused the token" in r.stderr and "invalid API key" in r.stderr
    assert grafana.posted("/api/dashboards/db") == []
    _no_traceback(r)


def test_any_other_grafana_error_exits_1_with_its_message(
    grafana: FakeGrafana, dash_dir: Path
) -> None:
    grafana.refuse = (500, "database is locked")
    r = _push("--url", grafana.url, "--token", "t", "--dir", str(dash_dir))
    assert r.exit_code == 1, r.output
    assert "database is locked" in r.stderr
    _no_traceback(r)


def test_unreachable_grafana_exits_2(free_port: int, dash_dir: Path) -> None:
    r = _push("--url", f"http://127.0.0.1:{free_port}", "--token", "t", "--dir", str(dash_dir))
    assert r.exit_code == 2, r.output
    assert "cannot reach Grafana" in r.stderr and "refused" in r.stderr
    _no_traceback(r)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:3000", "127.0.0.1:3000", "http://:3000"])
def test_a_bad_url_exits_2(url: str, dash_dir: Path) -> None:
    r = _push("--url", url, "--token", "t", "--dir", str(dash_dir))
    assert r.exit_code == 2, r.output
    assert "http(s)://" in r.stderr
    _no_traceback(r)


def test_no_dashboard_files_exits_2(grafana: FakeGrafana, tmp_path: Path) -> None:
    r = _push("--url", grafana.url, "--token", "t", "--dir", str(tmp_path))
    assert r.exit_code == 2, r.output
    assert "no dashboard" in r.stderr
    assert grafana.requests == []
    r = _push("--url", grafana.url, "--dir", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "not a folder" in r.stderr


def test_a_file_that_is_not_a_dashboard_exits_2(grafana: FakeGrafana, tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"title": "no uid"}')
    r = _push("--url", grafana.url, "--dir", str(tmp_path))
    assert r.exit_code == 2 and "not a Grafana dashboard" in r.stderr
    _no_traceback(r)


def test_the_installed_command_reports_without_a_traceback(free_port: int, dash_dir: Path) -> None:
    exe = Path(sys.executable).with_name("emostream")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "emostream.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOSTREAM_GRAFANA_")}
    p = subprocess.run(
        [
            *cmd,
            "dashboards",
            "push",
            "--url",
            f"http://127.0.0.1:{free_port}",
            "--dir",
            str(dash_dir),
        ],
        capture_output=True,
        text=True,
        env={**env, "NO_PROXY": "127.0.0.1"},
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("emostream: ") and "Traceback" not in p.stderr


def test_the_bundled_dashboards_push(grafana: FakeGrafana) -> None:
    bundled = catalog.load()
    if not bundled:
        pytest.skip("no dashboard JSON in the package folder yet")
    r = _push("--url", grafana.url, "--token", "t", "--datasource-uid", "P1")
    assert r.exit_code == 0, r.output
    bodies = [x.body for x in grafana.posted("/api/dashboards/db")]
    assert [b["dashboard"]["uid"] for b in bodies] == [d.uid for d in bundled]
    for b in bodies:
        assert b["dashboard"]["id"] is None and "prometheus" not in _datasource_uids(b)
    assert len(r.stdout.splitlines()) == len(bundled)


def test_refused_anonymous_access_says_so(grafana: FakeGrafana, dash_dir: Path) -> None:
    grafana.refuse = (401, "Unauthorized")
    r = _push("--url", grafana.url, "--dir", str(dash_dir))
    assert r.exit_code == 4, r.output
    assert "Grafana refused anonymous access (give --token)" in r.stderr
