"""The fer package's own pipeline as `emostream bench face`'s baseline, in its own venv.

fer needs TensorFlow, which must never enter the product environment, so it runs in a
throwaway venv (created on first use, from the pinned, checksummed fer wheel) through
``fer_baseline.py``, which prints its per-frame times as one JSON object. (Not named
``fer.py``: ``fer_baseline.py`` runs as a script from this folder, where such a file would
shadow the fer package itself.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from emostream.bench.measure import FrameStats, say

#: Packages of the fer venv (fer itself is added from the pinned, checksummed wheel).
FER_VENV_PACKAGES = (
    "tensorflow-cpu",
    "opencv-contrib-python-headless<5",
    "pandas",
    "tqdm",
    "requests",
    "Pillow",
    "setuptools<81",
    "h5py",
)
FER_VENV_MODULES = ("fer", "tensorflow", "cv2", "h5py")
_READY_MARK = ".emostream-fer-ready"


@dataclass
class FerResult:
    tflite: FrameStats | None
    keras: FrameStats | None
    find_faces: FrameStats | None
    threads: int
    versions: dict[str, str]
    venv: Path


def _say(msg: str) -> None:
    say("bench face", msg)


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _venv_ready(venv: Path) -> bool:
    """Cheap check (no TensorFlow import): the modules are findable and fer is the pin."""
    from emostream.training.fer_import import FER_VERSION

    py = _venv_python(venv)
    if not py.is_file():
        return False
    probe = (
        "import importlib.util as u, importlib.metadata as m, sys; "
        f"ok = all(u.find_spec(x) for x in {FER_VENV_MODULES!r}); "
        f"sys.exit(0 if ok and m.version('fer') == {FER_VERSION!r} else 1)"
    )
    return subprocess.run([str(py), "-c", probe], capture_output=True, check=False).returncode == 0


def ensure_fer_venv(venv: Path) -> Path:
    """The venv's python; creates the venv (TensorFlow, fer wheel) when missing or broken.

    Never touches the product environment: everything goes into ``venv``. Takes a few
    minutes and about 2 GB the first time; later runs only probe it.
    """
    py = _venv_python(venv)
    if (venv / _READY_MARK).is_file() and py.is_file():
        return py
    if _venv_ready(venv):
        (venv / _READY_MARK).write_text("ok\n")
        return py
    from emostream.training.fer_import import fetch_wheel

    _say(
        f"creating the fer baseline venv at {venv} (TensorFlow stays out of this "
        "environment; one-off, a few minutes, about 2 GB)"
    )
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "python -m venv",
            lambda: subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True),
        ),
        (
            "pip install " + " ".join(FER_VENV_PACKAGES),
            lambda: subprocess.run([*pip, *FER_VENV_PACKAGES], check=True),
        ),
        ("fetch and verify the pinned fer wheel", fetch_wheel),
        (
            "pip install --no-deps fer",
            lambda: subprocess.run([*pip, "--no-deps", str(fetch_wheel())], check=True),
        ),
    ]
    with tqdm(total=len(steps), desc="fer venv", unit="step", file=sys.stderr) as bar:
        for i, (what, step) in enumerate(steps, 1):
            _say(f"[{i}/{len(steps)}] {what}")
            try:
                step()
            except subprocess.CalledProcessError as exc:
                raise SystemExit(
                    f"creating {venv} failed at '{what}' (exit "
                    f"{exc.returncode}); fix the cause or pass --skip-fer"
                ) from exc
            bar.update(1)
    if not _venv_ready(venv):
        raise SystemExit(f"{venv} was created but fer/TensorFlow still do not import")
    (venv / _READY_MARK).write_text("ok\n")
    _say(f"fer venv ready at {venv}")
    return py


def run_fer(venv: Path, video: Path, frames: int, threads: int, warmup: int) -> FerResult:
    """Run fer_baseline.py in the fer venv and read its JSON from stdout."""
    py = ensure_fer_venv(venv)
    script = Path(__file__).with_name("fer_baseline.py")
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
        "PYTHONNOUSERSITE": "1",
    }
    env.pop("PYTHONPATH", None)  # the venv must not see the product's packages
    cmd = [str(py), str(script), "--video", str(video), "--frames", str(frames)]
    cmd += ["--threads", str(threads), "--warmup", str(warmup)]
    _say("running fer's detect_emotions in its own venv (TensorFlow start-up takes a moment)")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"fer baseline failed (exit {proc.returncode}): {' '.join(cmd)}; "
            f"if the venv is broken, delete {venv} to have it rebuilt"
        )
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])

    def stats(name: str, raw: dict[str, Any] | None) -> FrameStats | None:
        if raw is None:
            return None
        return FrameStats(
            name,
            [float(x) for x in raw["ms"]],
            [int(x) for x in raw["faces"]],
            list(raw.get("labels", [])),
        )

    variants: dict[str, Any] = data.get("variants", {})
    return FerResult(
        tflite=stats("fer FER() (TFLite)", variants.get("tflite")),
        keras=stats("fer FER(use_tflite=False)\n(Keras, fer's weights)", variants.get("keras")),
        find_faces=stats("fer find_faces", data.get("find_faces")),
        threads=int(data["threads"]),
        versions=dict(data.get("versions", {})),
        venv=venv,
    )


def agreement(a: FrameStats, b: FrameStats) -> tuple[float, int]:
    """Share of frames where both found a face and the largest face has the same label."""
    pairs = [
        (x, y) for x, y in zip(a.labels, b.labels, strict=False) if x is not None and y is not None
    ]
    if not pairs:
        return float("nan"), 0
    return sum(x == y for x, y in pairs) / len(pairs), len(pairs)
