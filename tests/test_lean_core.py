"""The lean core: the ingest and the worker run with every optional package unimportable.

pyproject.toml keeps the model converters (onnx, h5py, tflite), charts (matplotlib), the
Grafana client and the microphone (sounddevice) in extras, so that a GPU worker image carries
none of them. Here each process is a real interpreter with an import blocker installed before
emostream is imported (a ``sys.meta_path`` finder that refuses those names, as if they were
not installed): ``emostream serve`` answers a real predict, ``emostream worker`` joins a real
redis-server, and the commands that do need an extra say which one instead of a traceback.

Only 127.0.0.1; waits are generous failure guards, never speed checks.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emostream.bench.procs import Process, base_env, free_port
from emostream.extras import EXIT_MISSING_EXTRA, EXTRAS
from emostream.models.repository import ModelRepository
from emostream.paths import data_root

from redis_server import RedisServer

#: what the lean core must do without: the issue's five, and onnx (only the converters use it)
BLOCKED = ("matplotlib", "h5py", "tflite", "grafana_client", "sounddevice", "onnx")
#: their distributions, as pyproject.toml names them
DISTRIBUTIONS = {
    "matplotlib": "matplotlib",
    "h5py": "h5py",
    "tflite": "tflite",
    "grafana_client": "grafana-client",
    "sounddevice": "sounddevice",
    "onnx": "onnx",
    "torch": "torch",
    "mlflow": "mlflow",
    "optuna": "optuna",
    "yaml": "pyyaml",
    "opensmile": "opensmile",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
}
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

# Runs as `python LAUNCHER BLOCKED-CSV ARGS...`: checks that the blocker works, then runs
# `emostream ARGS...` (`--check`: only the check; `--import-core`: every core module).
LAUNCHER = r'''
import importlib.abc
import sys

BLOCKED = frozenset(sys.argv[1].split(","))


class Blocker(importlib.abc.MetaPathFinder):
    """Refuse the blocked top-level names, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            sys.stderr.write(f"lean-core: refused import of {name}\n")
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


early = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
if early:
    sys.exit(f"lean-core: imported before the blocker: {early}")
sys.meta_path.insert(0, Blocker())
for name in sorted(BLOCKED):
    try:
        __import__(name)
    except ImportError:
        continue
    sys.exit(f"lean-core: the blocker let {name} through")
sys.stderr.write("lean-core: blocked " + ",".join(sorted(BLOCKED)) + "\n")
sys.stderr.flush()

if sys.argv[2:] == ["--check"]:
    sys.exit(0)
if sys.argv[2:] == ["--import-core"]:
    import importlib
    import pkgutil

    import emostream

    names = [f"emostream.{m.name}" for m in pkgutil.iter_modules(emostream.__path__)]
    core = [n for n in names if n.rsplit(".", 1)[1] not in {"bench", "dashboards", "training"}]
    for pkg in ("emostream.broker", "emostream.stream", "emostream.models"):
        mod = importlib.import_module(pkg)
        core += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
    for name in sorted(set(core)):
        importlib.import_module(name)
    print("\n".join(sorted(set(core))))
    sys.exit(0)

sys.argv = ["emostream", *sys.argv[2:]]
from emostream.cli import main

main()
'''


@pytest.fixture()
def launcher(tmp_path: Path) -> list[str]:
    path = tmp_path / "lean_launch.py"
    path.write_text(LAUNCHER, encoding="utf-8")
    return [sys.executable, str(path), ",".join(BLOCKED)]


def _lean_env(**env: str) -> dict[str, str]:
    return base_env(PYTHONUNBUFFERED="1", **env)


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=_lean_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def started() -> Iterator[list[Process]]:
    """Processes a test starts; any still running at the end are killed."""
    procs: list[Process] = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.kill()


def _tried_nothing_blocked(process: Process) -> None:
    """After the launcher's own check, nothing even tried to import a blocked package."""
    log = process.log_path.read_text()
    assert "lean-core: blocked " in log, log[-4000:]
    after = log.split("lean-core: blocked ", 1)[1]
    assert "lean-core: refused import" not in after, after


def _stopped_cleanly(process: Process) -> None:
    code = process.stop(timeout=60)
    log = process.log()
    # uvicorn re-raises the SIGTERM it honoured after a graceful shutdown; the worker exits 0
    assert code in (0, -signal.SIGTERM), f"exit status {code}:\n{log}"
    assert "Traceback" not in log, log


def test_the_blocker_blocks(launcher: list[str]) -> None:
    """The launcher itself refuses every blocked name (else the tests below prove nothing)."""
    proc = _run([*launcher, "--check"])
    assert proc.returncode == 0, proc.stderr
    assert "lean-core: blocked " + ",".join(sorted(BLOCKED)) in proc.stderr
    for name in BLOCKED:
        assert f"lean-core: refused import of {name}\n" in proc.stderr
    # and the same interpreter without the blocker does have them (the suite installs all)
    plain = _run([sys.executable, "-c", "; ".join(f"import {name}" for name in BLOCKED)])
    assert plain.returncode == 0, plain.stderr


def test_core_modules_import_without_optional_packages(launcher: list[str]) -> None:
    proc = _run([*launcher, "--import-core"])
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    for name in (
        "emostream.cli",
        "emostream.settings",
        "emostream.broker.redis_ingest",
        "emostream.broker.redis_worker",
        "emostream.stream.app",
        "emostream.stream.client",
        "emostream.stream.media",
        "emostream.models.runner",
        "emostream.models.worker_node",
    ):
        assert name in imported, sorted(imported)
    assert not {n for n in imported if re.match(r"emostream\.(bench|dashboards|training)", n)}


@pytest.mark.slow
def test_serve_predicts_without_optional_packages(
    launcher: list[str], repo: ModelRepository, tmp_path: Path, started: list[Process]
) -> None:
    data = data_root()
    image = data / "media" / "justin.jpg" if data else None
    if image is None or not image.is_file():
        pytest.skip("shared data not found: ../shared/data/media/justin.jpg (EMOSTREAM_DATA)")
    port = free_port()
    argv = [*launcher, "serve", "--host", "127.0.0.1", "--port", str(port), "--broker", "memory"]
    server = Process(argv, _lean_env(EMOSTREAM_MODEL_ROOT=str(repo.root)), tmp_path / "serve.log")
    started.append(server)
    base = f"http://127.0.0.1:{port}"
    server.wait_http(f"{base}/readyz")
    with httpx.Client(base_url=base, trust_env=False, timeout=60) as c:
        response = c.post(
            "/v1/predict", content=image.read_bytes(), headers={"content-type": "image/jpeg"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["type"] == "face" and len(body["faces"]) == 1, body
        assert body["faces"][0]["label"] in body["faces"][0]["scores"]
        assert c.get("/").status_code == 200  # the demo page
        assert "emostream_predictions_total{" in c.get("/metrics").text
    _stopped_cleanly(server)
    _tried_nothing_blocked(server)


@pytest.mark.slow
def test_worker_starts_without_optional_packages(
    launcher: list[str],
    repo: ModelRepository,
    redis_server: RedisServer,
    tmp_path: Path,
    started: list[Process],
) -> None:
    metrics_port = free_port()
    argv = [*launcher, "worker", "--broker", redis_server.url]
    argv += ["--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)]
    env = _lean_env(EMOSTREAM_MODEL_ROOT=str(repo.root), EMOSTREAM_WORKER_NAME="lean")
    worker = Process(argv, env, tmp_path / "worker.log")
    started.append(worker)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    worker.wait_http(url)
    text = httpx.get(url, timeout=10, trust_env=False).text
    assert re.search(r'^emostream_worker_info\{[^}]*worker="lean"', text, re.M), text
    _stopped_cleanly(worker)
    _tried_nothing_blocked(worker)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        pytest.param(["models", "pull"], "convert", id="models-pull"),
        pytest.param(["bench", "worker"], "bench", id="bench-worker"),
        pytest.param(["bench", "face", "--skip-fer"], "bench", id="bench-face"),
        pytest.param(["dashboards", "push", "--dry-run"], "dashboards", id="dashboards-push"),
        pytest.param(
            ["dashboards", "preview", "--prometheus", "http://127.0.0.1:9"],
            "dashboards",
            id="dashboards-preview",
        ),
        pytest.param(["client", "--mic", "--url", "http://127.0.0.1:9"], "mic", id="client-mic"),
    ],
)
def test_a_command_that_needs_an_extra_names_it(
    launcher: list[str], tmp_path: Path, argv: list[str], extra: str
) -> None:
    # an empty model repository and bench output in tmp: nothing may be touched before the check
    proc = _run(
        [*launcher, *argv],
        EMOSTREAM_MODEL_ROOT=str(tmp_path / "models"),
        EMOSTREAM_BENCH_OUT=str(tmp_path / "BENCHMARKS.md"),
    )
    assert proc.returncode == EXIT_MISSING_EXTRA, proc.stdout + proc.stderr
    assert f"pip install 'emostream[{extra}]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "BENCHMARKS.md").exists()


@pytest.mark.parametrize("command", ["--help", "serve --help", "worker --help", "analyze --help"])
def test_help_works_without_optional_packages(launcher: list[str], command: str) -> None:
    proc = _run([*launcher, *command.split()])
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


# ---------------------------------------------------------------------------------------------
# pyproject.toml agrees


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _extra(extra: str) -> set[str]:
    """The distributions an extra brings, its self-references (emostream[x]) expanded."""
    out: set[str] = set()
    for requirement in PYPROJECT["optional-dependencies"][extra]:
        m = re.fullmatch(r"emostream\[([^\]]+)\]", requirement)
        if m:
            for inner in m.group(1).split(","):
                out |= _extra(inner.strip())
        else:
            out.add(_name(requirement))
    return out


def test_core_dependencies_are_lean() -> None:
    core = {_name(r) for r in PYPROJECT["dependencies"]}
    assert "pillow" in core, "stream/media.py imports PIL"
    assert not core & {DISTRIBUTIONS[m] for m in BLOCKED}, core
    assert not core & {"onnxruntime", "onnxruntime-gpu"}, "ONNX Runtime comes from cpu or gpu"


def test_extras_match_the_helper() -> None:
    """emostream.extras.EXTRAS (what `require` tells users) is what pyproject.toml installs."""
    declared = PYPROJECT["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert extra in declared, f"require(..., extra={extra!r}) names no extra of pyproject"
        for module in modules:
            assert DISTRIBUTIONS[module] in _extra(extra), f"[{extra}] lacks {module}"
    assert {"cpu", "gpu", "convert", "bench", "dashboards", "mic", "train", "dev"} <= set(declared)
    everything = _extra("all")
    for extra in ("cpu", "convert", "bench", "dashboards", "mic"):
        assert _extra(extra) <= everything, f"[all] lacks [{extra}]"
    assert "onnxruntime-gpu" not in everything, "cpu and gpu cannot be installed together"
