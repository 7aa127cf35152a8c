"""The real ``emostream serve`` process: starts, answers over TCP, stops cleanly on SIGTERM.

Only 127.0.0.1 is used. Waits are generous and a timeout means "did not start/stop", never
"too slow": nothing here measures speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from emostream.models.repository import ModelRepository
from emostream.training.fer_import import NAME

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.2
JPEG = {"content-type": "image/jpeg"}

pytestmark = pytest.mark.slow


def _command() -> list[str]:
    script = Path(sys.executable).parent / "emostream"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "emostream.cli"]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def client(self) -> httpx.Client:
        # trust_env=False: no proxy from the environment may come between us and 127.0.0.1.
        return httpx.Client(base_url=self.base, trust_env=False, timeout=30.0)

    def wait_for(self, path: str, status: int) -> httpx.Response:
        """Poll ``path`` until it answers ``status``; fail if the process dies or never does."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last: str = "no answer"
        with self.client() as c:
            while time.monotonic() < deadline:
                code = self.proc.poll()
                if code is not None:
                    pytest.fail(
                        f"emostream serve exited with {code} before {path} answered:\n"
                        f"{self.output()}"
                    )
                try:
                    response = c.get(path)
                    if response.status_code == status:
                        return response
                    last = f"{response.status_code} {response.text}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                time.sleep(POLL_S)
        pytest.fail(
            f"{path} did not answer {status} within {START_TIMEOUT_S}s (last: {last}); "
            f"the server failed to start:\n{self.output()}"
        )

    def stop(self) -> int:
        """SIGTERM, then the exit status; kill and fail if it does not stop."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"emostream serve ignored SIGTERM for {STOP_TIMEOUT_S}s:\n{self.output()}")


@pytest.fixture()
def start_server(tmp_path: Path, free_port: int) -> Iterator[Callable[[Path], Server]]:
    started: list[Server] = []

    def start(model_root: Path) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMOSTREAM_")}
        env.update(
            EMOSTREAM_MODEL_ROOT=str(model_root),
            EMOSTREAM_HOST="127.0.0.1",
            EMOSTREAM_LOG_LEVEL="info",
            PYTHONUNBUFFERED="1",
        )
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*_command(), "serve", "--host", "127.0.0.1", "--port", str(free_port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(proc, f"http://127.0.0.1:{free_port}", log)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(STOP_TIMEOUT_S)


def _exited_cleanly(code: int, output: str) -> None:
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is the
    # conventional status of a process that honoured SIGTERM; 0 is fine too.
    assert code in (0, -signal.SIGTERM), f"exit status {code}:\n{output}"
    assert "Traceback" not in output, output
    assert "Application shutdown complete" in output, output


def test_serve_predicts_and_stops_on_sigterm(
    start_server: Callable[[Path], Server], repo: ModelRepository, media: Path
) -> None:
    server = start_server(repo.root)
    ready = server.wait_for("/readyz", 200).json()
    assert ready["ready"] is True
    assert ready["models"]["face"]["model"] == f"{NAME}/{repo.resolve(NAME)}"

    justin = (media / "justin.jpg").read_bytes()
    with server.client() as c:
        assert c.get("/healthz").status_code == 200

        response = c.post("/v1/predict", content=justin, headers=JPEG)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["schema"] == 1 and body["type"] == "face"
        assert len(body["faces"]) == 1, body

        response = c.post("/v1/predict", files={"file": ("justin.jpg", justin, "image/jpeg")})
        assert response.status_code == 200, response.text
        assert len(response.json()["faces"]) == 1

        # Oversize bodies, declared and chunked, are refused over real TCP too ...
        limit = 10 * 1024 * 1024  # Settings.max_body_bytes default
        response = c.post("/v1/predict", content=b"\xff" * (limit + 1), headers=JPEG)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large"

        def chunks() -> Iterator[bytes]:
            for _ in range(11):
                yield b"\xff" * (1024 * 1024)

        response = c.post("/v1/predict", content=chunks(), headers=JPEG)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large"

        # ... and bad images, without hurting the next good request.
        response = c.post("/v1/predict", content=b"not an image" * 20, headers=JPEG)
        assert response.status_code == 415, response.text
        assert response.json()["error"] == "not_an_image"
        response = c.post("/v1/predict", content=justin, headers=JPEG)
        assert response.status_code == 200, response.text

        metrics = c.get("/metrics")
        assert metrics.status_code == 200
        assert "emostream_predictions_total{" in metrics.text

    _exited_cleanly(server.stop(), server.output())


def test_serve_without_models_is_alive_but_not_ready(
    start_server: Callable[[Path], Server], tmp_path: Path
) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    server = start_server(empty)
    server.wait_for("/healthz", 200)
    with server.client() as c:
        response = c.get("/readyz")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["ready"] is False
        assert "emostream models pull face-emotion" in body["reason"], body

        response = c.post("/v1/predict", content=b"\xff\xd8\xff", headers=JPEG)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "model_unavailable"
        assert c.get("/healthz").status_code == 200
    _exited_cleanly(server.stop(), server.output())
