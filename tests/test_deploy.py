"""Static checks of the deployment files: docker-compose.yml, deploy/, dashboards/provisioning/.

No Docker engine, cluster or GPU runs where the suite runs, so these tests check everything
that can be checked without one: the compose file against the compose schema (docker-compose
config), that the files and commands it names exist, that the Dockerfiles, manifests,
Prometheus and Grafana files agree with each other and with the package (ports, commands,
settings, stream names), and Prometheus' own `promtool check config`.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from emostream.settings import env_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
PROVISIONING = ROOT / "dashboards" / "provisioning"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "gpu": DEPLOY / "Dockerfile.gpu"}

# The contract with the broker and worker (deploy/README.md).
JOB_STREAMS = {"emostream:jobs:face", "emostream:jobs:voice"}
CONSUMER_GROUP = "emostream-workers"
INGEST_PORT = 8000
INGEST_METRICS_PORT = 9100  # server.metrics_port: off the HTTP port, no token to scrape with
WORKER_METRICS_PORT = 9100
REDIS_PORT = 6379
NAMESPACE = "emostream"

# KEDA redis-streams trigger metadata (keda.sh/docs/latest/scalers/redis-streams).
KEDA_REDIS_STREAMS_KEYS = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
    "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex",
}  # fmt: skip

Doc = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# loading


def _yaml(path: Path) -> Doc:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: expected a mapping at the top"
    return data


@cache
def compose() -> Doc:
    return _yaml(COMPOSE_FILE)


def services() -> dict[str, Doc]:
    svcs = compose()["services"]
    assert isinstance(svcs, dict)
    return svcs


@cache
def k8s_docs() -> tuple[tuple[Path, Doc], ...]:
    """Every object of every manifest (not the kustomization), with the file it came from."""
    out: list[tuple[Path, Doc]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                assert isinstance(doc, dict), f"{path}: every document must be a mapping"
                out.append((path, doc))
    return tuple(out)


def k8s_objects(kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


def containers(deployment: Doc) -> list[Doc]:
    found = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, list)
    return found


def settings_env() -> set[str]:
    """The environment variables emostream.settings.Settings reads."""
    return env_names()


@cache
def package_env() -> frozenset[str]:
    """Settings plus the EMOSTREAM_* names the package reads directly (paths.py: CACHE, DATA)."""
    names = set(settings_env())
    for folder in ("emostream", "stream", "models", "training"):
        for py in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(r"[\"'](EMOSTREAM_[A-Z0-9_]+)[\"']", py.read_text("utf-8")))
    return frozenset(names)


# ---------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_lines(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines inside a continuation too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path}: ends inside a line continuation"
    return out


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'" else value


@cache
def stages(path: Path) -> tuple[Stage, ...]:
    """The build stages, FROM arguments resolved with the global ARG defaults."""
    global_args: dict[str, str] = {}
    out: list[Stage] = []
    for keyword, args in dockerfile_lines(path):
        if keyword == "ARG" and not out:
            name, _, default = args.partition("=")
            global_args[name.strip()] = _unquote(default.strip())
        elif keyword == "FROM":
            parts = [p for p in args.split() if not p.startswith("--platform")]
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            out.append(Stage(_substitute(parts[0], global_args), alias))
        else:
            assert out, f"{path}: {keyword} before the first FROM"
            out[-1].instructions.append((keyword, args))
    assert out, f"{path}: no FROM"
    return tuple(out)


def env_of(stage: Stage) -> dict[str, str]:
    """The ENV key=value pairs of one stage (the only ENV form these files use)."""
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", args):
            env[item[0]] = _unquote(item[1])
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def exposed(path: Path) -> set[int]:
    final = stages(path)[-1]
    return {int(p.split("/")[0]) for args in final.all("EXPOSE") for p in args.split()}


def dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    assert path.is_file(), "the build context is the repository root: it needs a .dockerignore"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.startswith("#")]


# ---------------------------------------------------------------------------------------------
# emostream command lines


def option_value(argv: list[str], option: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def _as_argv(command: object) -> list[str]:
    if isinstance(command, str):
        return command.split()
    assert isinstance(command, list), command
    return [str(c) for c in command]


def compose_command(name: str) -> list[str]:
    return _as_argv(services()[name]["command"])


def all_commands() -> list[tuple[str, list[str]]]:
    """Every emostream invocation the deployment files make, with where it comes from."""
    found: list[tuple[str, list[str]]] = []
    for name, svc in services().items():
        if "command" in svc and _as_argv(svc["command"])[0] == "emostream":
            found.append((f"docker-compose.yml:{name}", _as_argv(svc["command"])))
    for kind, path in DOCKERFILES.items():
        for args in stages(path)[-1].all("CMD"):
            found.append((f"{path.name} ({kind}) CMD", exec_form(args)))
    for path, doc in k8s_docs():
        if doc["kind"] == "Deployment":
            for c in containers(doc):
                argv = [*c.get("command", []), *c.get("args", [])]
                if argv and argv[0] == "emostream":
                    found.append((f"{path.name}:{c['name']}", argv))
    return found


@cache
def cli_help(subcommand: tuple[str, ...]) -> str:
    """`emostream SUB --help` from the installed console script, wide enough not to wrap."""
    script = Path(sys.executable).parent / "emostream"
    if not script.exists():
        pytest.skip(f"{script} not installed (pip install -e .)")
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(script), *subcommand, "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, (
        f"`emostream {' '.join(subcommand)}` is not a command: {proc.stdout}{proc.stderr}"
    )
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# (a) the compose file is valid for Docker Compose


def compose_tool() -> list[str] | None:
    """`docker compose` (v2 plugin) when the client has it, else docker-compose (v1.29)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),  # where the CLI looks for its plugins
        "DOCKER_HOST": "unix:///nonexistent.sock",
    }
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, env=env, timeout=60
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    tool = compose_tool()
    if tool is None:
        pytest.skip(
            "neither `docker compose` nor docker-compose is installed "
            "(`make sysdeps` installs Debian's docker-compose)"
        )
    # An engine that does not exist: `config` must never need one, and never reaches one.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DOCKER_HOST": "unix:///nonexistent.sock",
    }
    cmd = [*tool, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--profile", "gpu"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_compose_config_is_valid() -> None:
    proc = run_compose("config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_compose_services() -> None:
    proc = run_compose("config", "--services")
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {
        "redis", "ingest", "worker", "worker-gpu", "prometheus", "grafana",
    }  # fmt: skip
    assert services()["worker-gpu"]["profiles"] == ["gpu"], "the GPU worker is opt-in"


# ---------------------------------------------------------------------------------------------
# (b) every path the compose file names exists


def test_compose_build_paths_exist() -> None:
    built = 0
    for name, svc in services().items():
        build = svc.get("build")
        if build is None:
            continue
        built += 1
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
        assert (context / str(dockerfile)).is_file(), f"{name}: {dockerfile} missing"
    assert built >= 3


def test_compose_volume_sources_exist() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):  # a bind mount, not a named volume
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is missing"


# ---------------------------------------------------------------------------------------------
# (c) the commands are real emostream subcommands with real options


@pytest.mark.parametrize(
    "where,argv", [pytest.param(where, argv, id=where) for where, argv in all_commands()]
)
def test_commands_are_real(where: str, argv: list[str]) -> None:
    assert argv[0] == "emostream"
    words: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-"):
            break
        words.append(arg)
    assert words, f"{where}: no subcommand in {argv}"
    text = cli_help(tuple(words))
    for arg in argv[1:]:
        if arg.startswith("--"):
            option = arg.split("=", 1)[0]
            assert re.search(rf"{re.escape(option)}\b", text), (
                f"{where}: `emostream {' '.join(words)}` has no option {option}"
            )


def test_every_service_command_is_covered() -> None:
    """The services that run emostream are the ones the contract names, with its ports."""
    kinds = {name: compose_command(name)[1] for name in ("ingest", "worker", "worker-gpu")}
    assert kinds == {"ingest": "serve", "worker": "worker", "worker-gpu": "worker"}
    ingest = compose_command("ingest")
    assert option_value(ingest, "--host") == "0.0.0.0"
    assert option_value(ingest, "--port") == str(INGEST_PORT)
    for name in ("worker", "worker-gpu"):
        assert option_value(compose_command(name), "--metrics-port") == str(WORKER_METRICS_PORT)


def test_compose_brokers_point_at_redis() -> None:
    for name in ("ingest", "worker", "worker-gpu"):
        svc = services()[name]
        url = option_value(compose_command(name), "--broker")
        assert url is not None, f"{name}: no --broker"
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("redis", "redis", REDIS_PORT)
        assert svc["environment"]["EMOSTREAM_BROKER"] == url
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services()["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_compose_env_names_are_settings() -> None:
    allowed = settings_env() | {"HEALTHCHECK_URL"}  # the image's HEALTHCHECK target
    for name in ("ingest", "worker", "worker-gpu"):
        env = services()[name]["environment"]
        unknown = {k for k in env if k not in allowed}
        assert not unknown, f"{name}: {sorted(unknown)} are not fields of Settings"


def test_workers_scale() -> None:
    """No host port on workers (replicas would collide) and time to finish in-flight jobs."""
    for name in ("worker", "worker-gpu"):
        svc = services()[name]
        assert "ports" not in svc, f"{name}: a host port breaks --scale"
        assert "container_name" not in svc
        assert str(svc["stop_grace_period"]) == "30s"
        health = urlsplit(svc["environment"]["HEALTHCHECK_URL"])
        assert health.port == WORKER_METRICS_PORT and health.path == "/metrics"
    gpu = services()["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "worker" in gpu["networks"]["default"]["aliases"], "Prometheus finds it as `worker`"


def test_grafana_defaults_are_safe() -> None:
    env = services()["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"].endswith(":-false}")
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")


# ---------------------------------------------------------------------------------------------
# (d) Dockerfiles


def test_dockerfile_bases() -> None:
    cpu, gpu = stages(DOCKERFILES["cpu"]), stages(DOCKERFILES["gpu"])
    assert {s.base for s in cpu} == {"python:3.11-slim-bookworm"}
    (gpu_base,) = {s.base for s in gpu}
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu(\d+\.\d+)", gpu_base)
    assert match, gpu_base
    # onnxruntime-gpu on PyPI: <= 1.26 is built for CUDA 12 + cuDNN 9, >= 1.27 for CUDA 13.
    pin = _unquote(
        next(a.split("=", 1)[1] for kw, a in dockerfile_lines(DOCKERFILES["gpu"])
             if kw == "ARG" and a.startswith("ORT_GPU="))
    )  # fmt: skip
    assert pin.startswith("onnxruntime-gpu")
    assert ("<1.27" in pin) == (match.group(1) == "12"), f"{pin} does not fit CUDA {gpu_base}"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_builds_from_the_repo(kind: str) -> None:
    path = DOCKERFILES[kind]
    build, final = stages(path)[0], stages(path)[-1]
    assert len(stages(path)) == 2 and build.name
    ignored = dockerignore()
    for args in build.all("COPY"):
        *sources, _dest = args.split()
        for source in sources:
            assert not source.startswith("--"), f"{path.name}: the build stage copies from {source}"
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}, which is missing"
            assert source.rstrip("/") not in ignored, f"{source} is in .dockerignore"
    assert {"pyproject.toml", "README.md", "emostream/", "stream/", "models/", "training/"} <= {
        s for args in build.all("COPY") for s in args.split()[:-1]
    }
    runs = " ; ".join(build.all("RUN"))
    assert "emostream models pull" in runs, "the image must carry the converted models"
    # what the runtime stage takes from the build stage
    copied = [args.split() for args in final.all("COPY")]
    assert all(c[0] == f"--from={build.name}" for c in copied), copied
    assert {c[1] for c in copied} == {"/opt/venv", "/opt/emostream/models"}
    assert env_of(final)["EMOSTREAM_MODEL_ROOT"] == "/opt/emostream/models"
    assert env_of(build)["EMOSTREAM_MODEL_ROOT"] == "/opt/emostream/models"


RUNTIME_VENV = "/opt/venv"  # the virtualenv the runtime stage copies
#: extras an image must never install: the core + cpu/gpu serve and work; `convert` only runs
#: `emostream models pull` at build time, in a virtualenv the runtime stage does not copy
NOT_IN_IMAGES = {"bench", "dashboards", "mic", "train", "dev", "all"}


def emostream_installs(stage: Stage) -> list[tuple[str, set[str]]]:
    """(virtualenv, extras) of every `pip install` of emostream (`.` or `emostream`) in RUN."""
    path_venv = next(
        (p.removesuffix("/bin") for p in env_of(stage).get("PATH", "").split(":") if p), ""
    )
    found: list[tuple[str, set[str]]] = []
    for run in stage.all("RUN"):
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for words in _commands(tokens):
            for i, word in enumerate(words[:-1]):
                if Path(word).name != "pip" or words[i + 1] != "install":
                    continue
                venv = str(Path(word).parent.parent) if "/" in word else path_venv
                for arg in words[i + 2 :]:
                    m = re.fullmatch(r"(?:\.|emostream)(?:\[([^\]]*)\])?", arg)
                    if m:
                        extras = {e.strip() for e in (m.group(1) or "").split(",") if e.strip()}
                        found.append((venv, extras))
    return found


def _commands(tokens: list[str]) -> list[list[str]]:
    """Shell tokens split into simple commands at &&, ||, ; and |."""
    out: list[list[str]] = [[]]
    for token in tokens:
        if token in {"&&", "||", ";", "|"}:
            out.append([])
        else:
            out[-1].append(token)
    return [c for c in out if c]


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_images_install_the_lean_core_only(kind: str) -> None:
    """The runtime virtualenv holds emostream[cpu] or [gpu] and nothing optional."""
    path = DOCKERFILES[kind]
    build = stages(path)[0]
    installs = emostream_installs(build)
    assert installs, f"{path.name}: no `pip install` of emostream"
    runtime = [extras for venv, extras in installs if venv == RUNTIME_VENV]
    assert runtime == [{kind}], f"{path.name}: {RUNTIME_VENV} gets {runtime}, not [{{{kind!r}}}]"
    for venv, extras in installs:
        assert not extras & NOT_IN_IMAGES, f"{path.name}: {venv} installs {extras}"
        assert "convert" not in extras or venv != RUNTIME_VENV, "converters in the image"
    # the pull runs from a virtualenv that has the converters
    (pull,) = [r for r in build.all("RUN") if "emostream models pull" in r]
    puller = re.search(r"(\S*)emostream models pull", pull)
    assert puller and puller.group(1), f"{path.name}: models pull runs from {RUNTIME_VENV}"
    venv = puller.group(1).removesuffix("/bin/")
    assert any(v == venv and "convert" in e for v, e in installs), f"{venv} lacks [convert]"
    copied = {args.split()[1] for args in stages(path)[-1].all("COPY")}
    assert venv not in copied, f"{path.name}: the runtime stage copies the converters ({venv})"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_the_build_time_checks_name_real_code(kind: str) -> None:
    """The Python a Dockerfile runs at build time imports things that exist (no engine here
    to run it, so at least every ``from emostream… import name`` must resolve)."""
    text = DOCKERFILES[kind].read_text()
    imports = re.findall(r"from (emostream[\w.]*) import (\w+)", text)
    assert imports, f"{kind}: no build-time import check found"
    for module, name in imports:
        assert hasattr(importlib.import_module(module), name), f"{kind}: {module}.{name}"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = dockerignore()
    for pattern in (
        ".venv",
        ".git",
        "models/artefacts/*/[0-9]*",
        "models/artefacts/*/aliases.json",
        "models/artefacts/mlflow",
    ):
        assert pattern in ignored, f".dockerignore must exclude {pattern}"
    # the versions that ship in the package go into the image's wheel (package-data)
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["emostream.models"]
    assert shipped, "no model version ships in the package"
    for files in shipped:
        folder = files.removesuffix("/*")
        assert (ROOT / "models" / folder / "model.json").is_file(), folder
        assert f"!models/{folder}" in ignored, f".dockerignore must let models/{folder} in"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_runtime(kind: str) -> None:
    path = DOCKERFILES[kind]
    final = stages(path)[-1]
    (user,) = final.all("USER")
    assert user not in {"root", "0"} and not user.startswith("0:"), "run as non-root"
    assert {INGEST_PORT, WORKER_METRICS_PORT} <= exposed(path)
    (cmd,) = final.all("CMD")
    argv = exec_form(cmd)
    env = env_of(final)
    assert not set(k for k in env if k.startswith("EMOSTREAM_")) - package_env()
    (health,) = final.all("HEALTHCHECK")
    assert "urllib.request" in health and "HEALTHCHECK_URL" in health, "no curl in the image"
    url = urlsplit(env["HEALTHCHECK_URL"])
    if kind == "cpu":
        assert argv[:2] == ["emostream", "serve"]
        assert option_value(argv, "--host") == "0.0.0.0"
        assert url.port == int(option_value(argv, "--port") or 0) == INGEST_PORT
        assert url.path == "/healthz"
    else:
        assert argv[:2] == ["emostream", "worker"]
        assert url.port == int(option_value(argv, "--metrics-port") or 0) == WORKER_METRICS_PORT
        assert url.path == "/metrics"
        assert env["EMOSTREAM_PROVIDERS"] == "CUDAExecutionProvider,CPUExecutionProvider"
    assert not final.all("ENTRYPOINT"), "CMD is the whole command; compose overrides it"


def image_dockerfiles() -> dict[str, Path]:
    """Image name -> the Dockerfile compose builds it from."""
    out: dict[str, Path] = {}
    for svc in services().values():
        if "build" in svc:
            out[svc["image"]] = ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]
    return out


def test_exposed_ports_cover_compose_and_k8s() -> None:
    images = image_dockerfiles()
    assert set(images.values()) == set(DOCKERFILES.values())
    for name, svc in services().items():
        if "build" not in svc:
            continue
        used = {int(str(p).split(":")[-1]) for p in svc.get("ports", [])}
        used |= {int(p) for p in svc.get("expose", [])}
        assert used <= exposed(images[svc["image"]]), f"{name} uses {used}"
    for deployment in k8s_objects("Deployment").values():
        for c in containers(deployment):
            if c["image"] in images:
                ports = {p["containerPort"] for p in c.get("ports", [])}
                assert ports <= exposed(images[c["image"]]), f"{c['image']}: {ports}"


# ---------------------------------------------------------------------------------------------
# (e) Kubernetes manifests


def test_k8s_objects_parse_and_share_a_namespace() -> None:
    kinds = sorted(d["kind"] for _, d in k8s_docs())
    assert kinds.count("Deployment") == 4 and kinds.count("Service") == 2
    assert {"Namespace", "ScaledObject"} <= set(kinds)
    for path, doc in k8s_docs():
        assert doc["apiVersion"] and doc["metadata"]["name"], path
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{path}: {doc['metadata']}"
    assert NAMESPACE in k8s_objects("Namespace")


def test_kustomization_lists_the_manifests() -> None:
    kustomization = _yaml(K8S / "kustomization.yaml")
    assert kustomization["namespace"] == NAMESPACE
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed <= files
    # a cluster without GPUs must not get a pod that stays Pending
    assert files - listed == {"worker-gpu.yaml"}


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: `kubectl kustomize` not run")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "KUBECONFIG": "/dev/null"}  # fmt: skip
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    expected = [d for p, d in k8s_docs() if p.name != "worker-gpu.yaml"]
    assert len(built) == len(expected)


def _port_names(container: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def _resolve(port: int | str, container: Doc) -> int:
    return _port_names(container)[port] if isinstance(port, str) else port


def test_k8s_services_reach_their_pods() -> None:
    deployments = k8s_objects("Deployment")
    for name, service in k8s_objects("Service").items():
        selector = service["spec"]["selector"]
        targets = [
            d for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert len(targets) == 1, f"Service {name} selects {len(targets)} Deployments"
        (container,) = containers(targets[0])
        for port in service["spec"]["ports"]:
            target = _resolve(port.get("targetPort", port["port"]), container)
            assert target in _port_names(container).values(), f"{name}: {port}"
    assert k8s_objects("Service")["redis"]["spec"]["ports"][0]["port"] == REDIS_PORT
    assert k8s_objects("Service")["ingest"]["spec"]["ports"][0]["port"] == INGEST_PORT
    for deployment in deployments.values():
        spec = deployment["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )


def test_k8s_env_names_are_settings() -> None:
    for name, deployment in k8s_objects("Deployment").items():
        for c in containers(deployment):
            unknown = {e["name"] for e in c.get("env", [])} - settings_env()
            assert not unknown, f"{name}: {sorted(unknown)} are not fields of Settings"


def _emostream(name: str) -> tuple[Doc, list[str], dict[str, Doc]]:
    (container,) = containers(k8s_objects("Deployment")[name])
    argv = [*container.get("command", []), *container.get("args", [])]
    return container, argv, {e["name"]: e for e in container.get("env", [])}


def test_k8s_ingest() -> None:
    deployment = k8s_objects("Deployment")["ingest"]
    container, argv, env = _emostream("ingest")
    assert argv[:2] == ["emostream", "serve"]
    port = int(option_value(argv, "--port") or 0)
    assert port == _port_names(container)["http"] == INGEST_PORT
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert _resolve(container[probe]["httpGet"]["port"], container) == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    metrics = int(env["EMOSTREAM_SERVER__METRICS_PORT"]["value"])
    assert metrics == _port_names(container)["metrics"] == INGEST_METRICS_PORT != port
    assert env["EMOSTREAM_SERVER__METRICS_HOST"]["value"] == "0.0.0.0"
    assert annotations["prometheus.io/port"] == str(metrics)
    _check_broker(env["EMOSTREAM_BROKER"]["value"])


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_k8s_workers(name: str) -> None:
    deployment = k8s_objects("Deployment")[name]
    container, argv, env = _emostream(name)
    assert argv[:2] == ["emostream", "worker"]
    port = int(option_value(argv, "--metrics-port") or 0)
    assert port == _port_names(container)["metrics"] == WORKER_METRICS_PORT
    assert env["EMOSTREAM_METRICS_PORT"]["value"] == str(port)
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/metrics" and _resolve(liveness["port"], container) == port
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    # the worker finishes and acknowledges in-flight jobs on SIGTERM
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
    broker = option_value(argv, "--broker")
    assert broker == env["EMOSTREAM_BROKER"]["value"]
    _check_broker(broker)
    name_from = env["EMOSTREAM_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert name_from == "metadata.name", "one consumer name per pod"


def test_k8s_images() -> None:
    deployments = k8s_objects("Deployment")
    image = {name: containers(d)[0]["image"] for name, d in deployments.items()}
    assert image["ingest"] == image["worker"] == services()["ingest"]["image"]
    assert image["worker-gpu"] == services()["worker-gpu"]["image"] != image["worker"]
    assert image["redis"] == services()["redis"]["image"]
    limits = containers(deployments["worker-gpu"])[0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert _emostream("worker-gpu")[2]["EMOSTREAM_PROVIDERS"]["value"].startswith("CUDA")


def _check_broker(url: str | None) -> None:
    assert url is not None
    parts = urlsplit(url)
    assert parts.scheme == "redis"
    assert parts.hostname in k8s_objects("Service"), f"{url}: no such Service"
    assert parts.port == REDIS_PORT


def test_keda_scaled_object() -> None:
    (scaled,) = k8s_objects("ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] in k8s_objects("Deployment") and target["name"] == "worker"
    assert target.get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"]
    streams = set()
    for trigger in spec["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert set(meta) <= KEDA_REDIS_STREAMS_KEYS, set(meta) - KEDA_REDIS_STREAMS_KEYS
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata are strings"
        assert meta["stream"] in JOB_STREAMS
        assert meta["consumerGroup"] == CONSUMER_GROUP
        host, _, port = meta["address"].partition(":")
        # the KEDA operator runs in its own namespace: the short name would not resolve there
        assert host == f"redis.{NAMESPACE}.svc.cluster.local" and int(port) == REDIS_PORT
        if "lagCount" in meta:
            assert "activationLagCount" in meta
        assert {"pendingEntriesCount", "lagCount", "streamLength"} & set(meta)
        streams.add(meta["stream"])
    assert "emostream:jobs:face" in streams


# ---------------------------------------------------------------------------------------------
# (f) Prometheus


def _mount_target(service: str, source: str) -> str:
    for volume in services()[service]["volumes"]:
        src, dst, *_ = volume.split(":")
        if Path(src) == Path(source):
            return str(dst)
    raise AssertionError(f"{service} does not mount {source}")


def test_prometheus_config() -> None:
    config = _yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    strays = {p.name for p in RULES_DIR.iterdir()} - {"README.md"}
    assert all(name.endswith(".yml") for name in strays), f"not loaded by the glob: {strays}"
    assert _mount_target("prometheus", "./deploy/prometheus/rules") == "/etc/prometheus/rules"
    mounted = _mount_target("prometheus", "./deploy/prometheus/prometheus.yml")
    assert f"--config.file={mounted}" in services()["prometheus"]["command"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    static = [
        t for job in jobs.values() for s in job.get("static_configs", []) for t in s["targets"]
    ]
    assert f"ingest:{INGEST_METRICS_PORT}" in static
    ingest = services()["ingest"]
    assert ingest["environment"]["EMOSTREAM_SERVER__METRICS_PORT"] == str(INGEST_METRICS_PORT)
    assert ingest["environment"]["EMOSTREAM_SERVER__METRICS_HOST"] == "0.0.0.0"
    assert str(INGEST_METRICS_PORT) in ingest["expose"]
    assert all(str(INGEST_METRICS_PORT) not in str(p) for p in ingest["ports"]), "not published"
    dns = [sd for job in jobs.values() for sd in job.get("dns_sd_configs", [])]
    assert len(dns) == 1
    (sd,) = dns
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == WORKER_METRICS_PORT
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
    for target in static:
        host = target.split(":")[0]
        assert host == "localhost" or host in services(), f"{target}: no such compose service"


@pytest.mark.prometheus
def test_promtool_check_config(tmp_path: Path) -> None:
    """Prometheus' own check; the rules glob points at the repository so rules get checked too."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (`make sysdeps` installs Debian's prometheus)")
    config = _yaml(PROMETHEUS_CONFIG)
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = subprocess.run(
        [promtool, "check", "config", str(checked)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rules in RULES_DIR.glob("*.yml"):
        assert rules.name in proc.stdout, f"{rules} was not checked"


# ---------------------------------------------------------------------------------------------
# (g) Grafana provisioning


def test_grafana_datasource() -> None:
    provisioning = _mount_target("grafana", "./dashboards/provisioning")
    assert provisioning == "/etc/grafana/provisioning"
    config = _yaml(PROVISIONING / "datasources" / "prometheus.yml")
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    assert source["access"] == "proxy"
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and url.hostname in services()
    assert f"{url.port}:{url.port}" in services()["prometheus"]["ports"]


def test_grafana_dashboard_provider() -> None:
    config = _yaml(PROVISIONING / "dashboards" / "emostream.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["name"]
    assert provider["options"]["path"] == _mount_target("grafana", "./dashboards")
    for dashboard in (ROOT / "dashboards").rglob("*.json"):
        json.loads(dashboard.read_text(encoding="utf-8"))
