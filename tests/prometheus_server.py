"""A real ``prometheus`` for tests: its own process on a free loopback port, fast scrapes.

Its configuration is the deployment's (deploy/prometheus/prometheus.yml): the same jobs and
the same rule files, with two changes only a test needs: targets are the test's processes
(static, instead of compose DNS), and scrapes and rule evaluation run every second.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from emostream.bench.procs import free_port, terminate, wait_http

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
PROMETHEUS = shutil.which("prometheus")


def scrape_config(targets: dict[str, list[str]], interval: str = "1s") -> dict[str, Any]:
    """The deployment's config with ``targets`` per job name and a short interval."""
    config = yaml.safe_load(DEPLOY_CONFIG.read_text())
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name not in targets:
            continue
        job = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
        job["static_configs"] = [{"targets": targets[name]}]
        jobs.append(job)
    missing = set(targets) - {j["job_name"] for j in jobs}
    assert not missing, f"no such job in {DEPLOY_CONFIG}: {missing}"
    config["scrape_configs"] = jobs
    return config


class PrometheusServer:
    def __init__(self, workdir: Path, targets: dict[str, list[str]]) -> None:
        if PROMETHEUS is None:
            pytest.skip("prometheus not installed (`make sysdeps` installs Debian's prometheus)")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.config.parent.mkdir(parents=True, exist_ok=True)
        own = {"prometheus": [f"127.0.0.1:{self.port}"]}  # the deployment scrapes itself too
        self.config.write_text(yaml.safe_dump(scrape_config({**own, **targets})))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        assert PROMETHEUS is not None
        self._log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/-/ready", self.proc, self.log, timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 20)
        self.proc = None
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return (self.workdir / "prometheus.log").read_text()[-3000:]
