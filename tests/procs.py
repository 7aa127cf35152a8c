"""The real processes of a deployment, for tests: ``emostream serve`` and ``emostream worker``.

Each is started the way a container would start it (the console script, options from
``EMOSTREAM_*`` variables), waited for through its own HTTP endpoint, and stopped with
SIGTERM (or killed with SIGKILL where a test wants a crash). Waits are failure guards,
never speed checks.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from emostream.pipeline.jobs import FrameInfo, Job

ROOT = Path(__file__).resolve().parents[1]
EMOSTREAM = [str(Path(sys.executable).parent / "emostream")]
START_TIMEOUT_S = 90.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def base_env(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EMOSTREAM_")}
    environ.update({"EMOSTREAM_MODEL_ROOT": str(ROOT / "models"), **env})
    if "EMOSTREAM_DATA" in os.environ:
        environ["EMOSTREAM_DATA"] = os.environ["EMOSTREAM_DATA"]
    return environ


class Process:
    """A child process whose stderr goes to a file the test can show when it fails."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=self._log, text=True
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()[-4000:]

    def wait_http(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer 200: {self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()


class Server(Process):
    """``emostream serve`` bound to ``host``; ready when /readyz says 200."""

    def __init__(self, host: str, log_dir: Path | None = None, **env: str) -> None:
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        argv = [*EMOSTREAM, "serve", "--host", host, "--port", str(self.port)]
        argv += ["--log-level", "warning"]
        log = (log_dir or Path("test-output")) / f"serve-{self.port}.log"
        super().__init__(argv, base_env(**env), log)
        self.wait_http(f"{self.url}/readyz")


class Worker(Process):
    """``emostream worker`` on a Redis URL; ready when its own /metrics answers."""

    def __init__(self, broker: str, log_dir: Path, name: str, **env: str) -> None:
        self.name = name
        self.metrics_port = free_port()
        env = {
            "EMOSTREAM_BROKER": broker,
            "EMOSTREAM_METRICS_PORT": str(self.metrics_port),
            "EMOSTREAM_WORKER_NAME": name,
            "EMOSTREAM_INTRA_OP_THREADS": "1",  # several workers share 2 cores in tests
            **env,
        }
        super().__init__([*EMOSTREAM, "worker"], base_env(**env), log_dir / f"{name}.log")
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.wait_http(self.metrics_url)

    def counter(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        return metric(httpx.get(self.metrics_url, timeout=5, trust_env=False).text, name, **labels)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def face_job(session: str, seq: int, image: np.ndarray, deadline_s: float = 30.0) -> Job:
    """A job as an ingest node makes it: downscaled once, with its source size."""
    h, w = image.shape[:2]
    scale = min(1.0, 640 / max(h, w))
    frame = cv2.resize(image, (round(w * scale), round(h * scale))) if scale < 1 else image
    info = FrameInfo(w, h, scale)
    return Job(session, seq, seq / 15, frame, info, deadline=time.monotonic() + deadline_s)
