"""Observability against a real Prometheus: every dashboard query, every alert rule, drift.

A real ``prometheus`` (Debian's) scrapes a real ``emostream serve`` (and, with Redis, a real
``emostream worker``) every second, with the deployment's own jobs and alert rules, while real
WebRTC clients stream real video. Then every PromQL expression of every dashboard panel is
evaluated through Prometheus' HTTP API over the streaming period and must return data, every
alert rule must load and evaluate, and every panel is drawn into PNGs under test-output/.

The processes serve a private copy of the model repository with a shadow candidate (version
2: version 1's weights under a new card), so the promotion and shadow panels have data too.

The drift test streams a still photo (every face "happy"): the PSI gauge must reach the value
the card's reference distribution implies for a one-class window, and the drift alert's
expression must fire in Prometheus (the alert itself goes pending: its ``for`` is 15 min).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import yaml
from shared_media import ravdess_file

from emostream.bench.procs import EMOSTREAM, Server, Worker
from emostream.dashboards import catalog, preview
from emostream.dashboards.prometheus import Prometheus
from emostream.models.drift import js_distance, psi
from emostream.models.repository import ModelRepository
from emostream.paths import data_root, model_root
from emostream.stream.client import EmotionClient, Source

from model_versions import NAME, copy_version, model_root_copy
from prometheus_server import RULES_DIR, PrometheusServer
from redis_server import RedisServer
from voice_models import has_voice_model, voice_repo  # noqa: F401

pytestmark = pytest.mark.slow

WINDOW = 120  # drift window (predictions) of the processes under test
WAIT_S = 120.0  # failure guard for anything that waits on scrapes; never a speed check


def _media(name: str) -> Path:
    root = data_root()
    if root is None or not (root / "media" / name).is_file():
        pytest.skip(f"shared data not found: set EMOSTREAM_DATA (needs media/{name})")
    return root / "media" / name


@dataclass
class Stack:
    mode: str
    server: Server
    prometheus: PrometheusServer
    prom: Prometheus
    started: float  # wall clock, for range queries


@pytest.fixture(scope="module", params=["redis", "memory"])
def stack(
    request: pytest.FixtureRequest,
    netns_ip: str,
    tmp_path_factory: pytest.TempPathFactory,
    has_voice_model: ModelRepository,  # noqa: F811 (the voice panels need voice traffic)
) -> Iterator[Stack]:
    """serve (+ worker and Redis in Redis mode) scraped by Prometheus every second."""
    logs = tmp_path_factory.mktemp(f"observability-{request.param}")
    repo = model_root_copy(ModelRepository(model_root()), logs / "models")
    for name in ("voice-activity", "voice-emotion"):  # linked: this test never changes them
        (repo.root / name).symlink_to((has_voice_model.root / name).resolve())
    copy_version(repo, "2")
    repo.set_shadow(NAME, "2", 1.0)  # the shadow panels' data; clients see only version 1
    env = {
        "EMOSTREAM_DRIFT_WINDOW_SIZE": str(WINDOW),
        "EMOSTREAM_IDLE_TIMEOUT_S": "3",
        "EMOSTREAM_MODEL_ROOT": str(repo.root),
    }
    redis = worker = None
    if request.param == "redis":
        redis = RedisServer(logs / "redis").start()
        worker = Worker(redis.url, logs, "obs-worker", **env)
        server = Server(netns_ip, logs, EMOSTREAM_BROKER=redis.url, **env)
    else:
        server = Server(netns_ip, logs, **env)
    targets = {"emostream-ingest": [server.url.removeprefix("http://")]}
    if worker is not None:
        targets["emostream-worker"] = [f"127.0.0.1:{worker.metrics_port}"]
    prometheus = PrometheusServer(logs / "prometheus", targets).start()
    prom = Prometheus(prometheus.url)
    jobs = len(targets) + 1  # and Prometheus itself
    _wait(
        prom,
        f"count(up == 1) == {jobs} and on() count(count_over_time(up[1m]) > 2) == {jobs}",
        "every target scraped a few times",
    )
    yield Stack(request.param, server, prometheus, prom, time.time())
    prom.close()
    prometheus.stop()
    server.stop()
    if worker is not None:
        worker.stop()
    if redis is not None:
        redis.stop()


def _wait(prom: Prometheus, expr: str, what: str) -> float:
    """Poll until ``expr`` has a finite value (a failure guard, not a timer)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        series = prom.instant(expr)
        values = [float(s.values[-1]) for s in series if np.isfinite(s.values[-1])]
        if values:
            return max(values)
        time.sleep(0.5)
    raise AssertionError(f"{what}: `{expr}` had no value after {WAIT_S:.0f} s")


async def _stream(url: str, source: Source, n: int, *, faces: bool = False) -> list[dict]:
    """Face messages until ``n`` of them (or ``n`` faces in them, with ``faces``)."""
    out: list[dict] = []
    count = 0
    async with EmotionClient(url, source=source) as client:
        async for message in client.messages(idle_timeout_s=30):
            msg = message.to_dict()
            if msg["type"] == "face":
                out.append(msg)
                count += len(msg["faces"]) if faces else 1
            if count >= n:
                break
    return out


def _rules() -> list[dict]:
    return [
        rule
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


async def test_every_panel_query_returns_data_and_every_rule_evaluates(
    stack: Stack, output_dir: Path
) -> None:
    # camera and microphone: the video's faces and a RAVDESS clip looped (speech and pauses)
    media = [str(_media("woman2.mp4")), str(ravdess_file())]
    msgs = await _stream(stack.server.url, Source.files(media, loop=True), 300)
    assert len(msgs) == 300
    async with httpx.AsyncClient(trust_env=False) as http:  # one bad request: a 4xx counted
        bad = await http.post(
            f"{stack.server.url}/v1/predict",
            files={"file": ("x.jpg", b"not an image", "image/jpeg")},
        )
    assert 400 <= bad.status_code < 500
    prom = stack.prom
    _wait(prom, "sum(emostream_requests_rejected_total) > 0", "the rejected request")
    _wait(prom, "sum(emostream_frames_processed_total) >= 300", "the processed frames")
    _wait(prom, 'sum(emostream_voice_windows_total{speech="true"}) > 0', "the speech windows")
    _wait(prom, "sum(emostream_calls_ended_total) > 0", "the call's end (the Calls row)")
    time.sleep(3)  # a few more scrapes after the stream, so every rate has two points
    end = time.time()

    dashboards = catalog.load()
    assert dashboards
    empty = []
    checked = 0
    for dash in dashboards:
        for panel in dash.panels:
            for target in panel.targets:
                expr = dash.promql(target.expr)
                if target.instant:
                    series = prom.instant(expr, end)
                else:
                    series = prom.range(expr, stack.started, end, 1.0)
                checked += 1
                if not any(np.isfinite(s.values).any() for s in series):
                    empty.append(f"{dash.uid} / {panel.title} / {expr}")
    assert checked >= 30
    assert not empty, "panel queries without data:\n" + "\n".join(empty)

    # Every alert rule: loaded, evaluated without error, and its expression parses.
    loaded = {
        r["name"]: r
        for g in prom.get("/api/v1/rules")["groups"]
        for r in g["rules"]
        if r["type"] == "alerting"
    }
    rules = _rules()
    assert {r["alert"] for r in rules} == set(loaded)
    for rule in rules:
        prom.instant(rule["expr"])  # raises PromQLError when it does not parse
        assert loaded[rule["alert"]]["health"] == "ok", loaded[rule["alert"]]
    healthy = ("EmostreamNoWorkerUp", "EmostreamRedisUnreachable", "EmostreamIngestDown")
    for name in healthy:  # a healthy stack must not page anyone
        assert loaded[name]["state"] == "inactive", loaded[name]

    # What Grafana would show, drawn by the command a user runs (its own clock, so the range
    # reaches a little past `end`; the panels must still have data).
    minutes = (time.time() - stack.started) / 60
    window = ["--minutes", f"{minutes:.3f}", "--step", "1", "--out", str(output_dir)]
    cli = subprocess.run(
        [*EMOSTREAM, "dashboards", "preview", "--prometheus", prom.url, *window],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    for dash in dashboards:
        assert f"{dash.uid}.png  {len(dash.panels)} panels, 0 without data" in cli.stdout
        assert (output_dir / f"{dash.uid}.png").stat().st_size > 10_000
        assert len(list((output_dir / dash.uid).glob("*.png"))) == len(dash.panels)


def _still_video(path: Path, photo: Path, seconds: float = 30.0, fps: int = 15) -> Path:
    """A short video of one photo: every frame the same face, so the same class."""
    image = cv2.imread(str(photo))
    h, w = image.shape[:2]
    s = 480 / max(h, w)
    image = cv2.resize(image, (round(w * s) // 2 * 2, round(h * s) // 2 * 2))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        for _ in range(int(seconds * fps)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


async def test_one_class_session_drives_psi_over_the_threshold_and_the_alert_fires(
    stack: Stack, output_dir: Path, tmp_path: Path
) -> None:
    video = _still_video(tmp_path / "still.mp4", _media("obama.jpg"))
    card = ModelRepository(model_root()).card("face-emotion", "1")
    assert card.reference_distribution is not None
    msgs = await _stream(stack.server.url, Source.file(str(video)), WINDOW + 30, faces=True)
    labels = {f["label"] for m in msgs for f in m["faces"]}
    assert labels == {"happy"}, labels  # the window now holds only this session's class
    assert sum(len(m["faces"]) for m in msgs) >= WINDOW

    one_hot = np.array([1.0 if c == "happy" else 0.0 for c in card.classes])
    reference = np.array([card.reference_distribution[c] for c in card.classes])
    want_psi, want_js = psi(one_hot, reference), js_distance(one_hot, reference)
    assert want_psi > 0.25

    prom = stack.prom
    sel = '{model="face-emotion",version="1"}'
    got = _wait(
        prom,
        f"max(emostream_drift_psi{sel}) and on() max(emostream_drift_window_samples{sel})"
        f" == {WINDOW}",
        "a full drift window",
    )
    # the window may still hold a few faces of the earlier test when first full: wait for it
    deadline = time.monotonic() + WAIT_S
    while abs(got - want_psi) > 1e-6 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        got = _wait(prom, f"max(emostream_drift_psi{sel})", "PSI")
    assert got == pytest.approx(want_psi, abs=1e-6)
    js = _wait(prom, f"max(emostream_drift_js_distance{sel})", "JS distance")
    assert js == pytest.approx(want_js, abs=1e-6)

    rule = next(r for r in _rules() if r["alert"] == "EmostreamClassDrift")
    firing = prom.instant(rule["expr"])
    assert [s.labels for s in firing] == [
        {"model": "face-emotion", "version": "1", "modality": "face"}
    ]
    assert float(firing[0].values[-1]) == pytest.approx(want_psi, abs=1e-6)

    def drift_alert_state() -> str | None:
        alerts = prom.get("/api/v1/alerts")["alerts"]
        return next(
            (a["state"] for a in alerts if a["labels"]["alertname"] == "EmostreamClassDrift"),
            None,
        )

    deadline = time.monotonic() + WAIT_S
    while drift_alert_state() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert drift_alert_state() == "pending"  # `for: 15m`; promtool's unit test plays it out

    models = [d for d in catalog.load() if d.uid == "emostream-models"]
    preview.render(prom, models, output_dir, stack.started, time.time(), 1.0)
    assert (output_dir / "emostream-models.png").is_file()
