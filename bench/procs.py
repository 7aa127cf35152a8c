"""The real processes of a deployment, for tests and benchmarks: serve, worker, redis-server.

Each is started the way a container would start it (the console script, options from
``EMOSTREAM_*`` variables), waited for through its own endpoint, and stopped with SIGTERM
(or killed with SIGKILL where a test wants a crash). Waits are failure guards, never speed
checks. Tests start from a clean environment (:func:`base_env`); benchmarks pass their own,
so that the user's ``EMOSTREAM_*`` settings are what gets measured. Also here: the
Prometheus text parser, the per-process CPU time and resources (:func:`usage`) all read
off these processes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

EMOSTREAM = [str(Path(sys.executable).parent / "emostream")]
START_TIMEOUT_S = 90.0
REDIS_SERVER = shutil.which("redis-server")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


#: ``serve`` as one process unless a test or bench asks for more (the default is one
#: ingest process per core, which would make every test's server a process tree).
SINGLE = {"EMOSTREAM_LOCAL__PROCESSES": "1"}


def base_env(**env: str) -> dict[str, str]:
    """This environment without any ``EMOSTREAM_*`` of the caller's, plus the model
    repository and shared data the caller uses, one serve process (``SINGLE``), plus
    ``env``: what tests start from."""
    from emostream.paths import model_root

    environ = {k: v for k, v in os.environ.items() if not k.startswith("EMOSTREAM_")}
    environ.update({"EMOSTREAM_MODEL_ROOT": str(model_root()), **SINGLE, **env})
    if "EMOSTREAM_DATA" in os.environ:
        environ["EMOSTREAM_DATA"] = os.environ["EMOSTREAM_DATA"]
    return environ


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren and so on, alive now (``serve --processes``)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live descendants (a child that ended meanwhile loses
    what it used: restarts are rare, and a bench reports them)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            total += cpu_seconds(p)
        except (OSError, IndexError):
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU time all processes of this machine have used so far, every core (/proc/stat),
    so a bench can say how much of the machine something else took during its run."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """What one process holds now: resident memory, threads, open file descriptors."""

    rss_mb: float
    threads: int
    fds: int


def usage(pid: int) -> Usage:
    """A process's :class:`Usage`, read from /proc/PID (status and fd/); raises
    ``FileNotFoundError``/``ProcessLookupError`` once it has exited."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss_kb = int(status["VmRSS"].split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return Usage(rss_kb / 1024, int(status["Threads"]), fds)


def metric_by(text: str, name: str, key: str, **labels: str) -> dict[str, float]:
    """Samples of metric ``name`` whose labels include ``labels``, summed per value of the
    label ``key`` ("" where a sample lacks it), from Prometheus' text format."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            out[have.get(key, "")] = out.get(have.get(key, ""), 0.0) + float(m.group(2))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    return sum(metric_by(text, name, "", **labels).values())


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    log: Callable[[], str] = lambda: "",
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Until ``url`` answers 200; raises, with ``log()``, when ``proc`` exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {log()}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200: {log()}")


class Process:
    """A child process whose stderr goes to a file the caller can show when it fails."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            argv, env=dict(env), stdout=subprocess.DEVNULL, stderr=self._log, text=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()[-4000:]

    def wait_http(self, url: str) -> None:
        wait_http(url, self.proc, self.log)

    def stop(self, timeout: float = 30.0) -> int:
        terminate(self.proc, timeout)
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()


class Server(Process):
    """``emostream serve`` bound to ``host``; ready when /readyz says 200.

    ``environ``: the environment to start from (default :func:`base_env`); ``env`` goes on
    top. Logs go to ``log_dir`` (default test-output/).
    """

    def __init__(
        self,
        host: str,
        log_dir: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **env: str,
    ) -> None:
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        argv = [*EMOSTREAM, "serve", "--host", host, "--port", str(self.port)]
        argv += ["--log-level", "warning"]
        log = (log_dir or Path("test-output")) / f"serve-{self.port}.log"
        super().__init__(argv, {**(base_env() if environ is None else environ), **env}, log)
        self.wait_http(f"{self.url}/readyz")


class Worker(Process):
    """``emostream worker`` on a Redis URL; ready when its own /metrics answers.

    ``environ`` defaults to :func:`base_env` with one ONNX Runtime intra-op thread (several
    workers share 2 cores in tests); a benchmark passes its own.
    """

    def __init__(
        self,
        broker: str,
        log_dir: Path,
        name: str,
        *,
        environ: Mapping[str, str] | None = None,
        **env: str,
    ) -> None:
        self.name = name
        self.metrics_port = free_port()
        start = base_env(EMOSTREAM_INTRA_OP_THREADS="1") if environ is None else environ
        env = {
            **start,
            "EMOSTREAM_BROKER": broker,
            "EMOSTREAM_METRICS_PORT": str(self.metrics_port),
            "EMOSTREAM_WORKER_NAME": name,
            **env,
        }
        super().__init__([*EMOSTREAM, "worker"], env, log_dir / f"{name}.log")
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.wait_http(self.metrics_url)

    def counter(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        return metric(httpx.get(self.metrics_url, timeout=5, trust_env=False).text, name, **labels)


@dataclass(frozen=True)
class RedisTls:
    """The files of a TLS-only Redis: the CA that signed the server's certificate, both
    PEM; clients check the server against ``ca`` (``ssl_ca_certs`` in the URL)."""

    ca: Path
    cert: Path
    key: Path


class RedisServer:
    """A private ``redis-server`` on ``host``:``port`` (a free one by default), no disk.

    Never the machine's Redis on 6379. ``stop``/``start`` on the same port restart it
    (it comes back empty, as a Redis without persistence does). ``password`` sets
    ``requirepass``; ``tls`` makes it listen with TLS only. ``url`` carries both.
    """

    def __init__(
        self,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        password: str | None = None,
        tls: RedisTls | None = None,
    ) -> None:
        if REDIS_SERVER is None:
            raise FileNotFoundError("redis-server not installed (Debian package redis-server)")
        self.host = host
        self.port = port or free_port(host)
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        query = f"?ssl_ca_certs={quote(str(self.tls.ca))}" if self.tls else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/0{query}"

    def _options(self) -> dict[str, str]:
        options = {
            "bind": self.host,
            "port": str(self.port),
            "save": "",
            "appendonly": "no",
            "dir": str(self.workdir),
            "logfile": str(self.workdir / "redis.log"),
        }
        if self.password:
            options["requirepass"] = self.password
        if self.tls:
            options.update(
                {
                    "port": "0",
                    "tls-port": str(self.port),
                    "tls-cert-file": str(self.tls.cert),
                    "tls-key-file": str(self.tls.key),
                    "tls-ca-cert-file": str(self.tls.ca),
                    "tls-auth-clients": "no",
                }
            )
        return options

    def _answers(self) -> bool:
        """Whether it answers PING (``-NOAUTH`` counts: it is up, and wants the password)."""
        with socket.create_connection((self.host, self.port), 0.2) as raw:
            s: socket.socket = raw
            if self.tls:
                context = ssl.create_default_context(cafile=str(self.tls.ca))
                s = context.wrap_socket(raw, server_hostname=self.host)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [REDIS_SERVER]
        for key, value in self._options().items():
            argv += [f"--{key}", value]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()}")
            try:
                if self._answers():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on {self.port}: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 10)
        self.proc = None

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text()[-2000:] if path.is_file() else ""
