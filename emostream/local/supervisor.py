"""The parent of ``serve --processes N``: it binds the port, starts the children, keeps
them running, and is the local broker (``hub``) between them.

Children are started with ``subprocess`` (not ``fork``: a forked asyncio loop, ONNX
Runtime threads and aiortc would come along) and get their descriptors by inheritance
(``child.py``). A child that ends is started again after a backoff (0.5 s doubling to
10 s while it keeps dying young); the hub first settles what it held (an ingest's
sessions end, an inference process's jobs are answered ``worker_died``) and its metrics'
live gauges are marked dead. An inference process that exits 3 (no face model) is not
restarted: the ingests' readiness says why. SIGTERM or SIGINT: the children get SIGTERM
(they drain as a single server does), then SIGKILL after ``worker.drain_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

from emostream import metrics
from emostream.local.arena import Arena, Layout
from emostream.local.channel import Channel
from emostream.local.child import EXIT_MODEL_MISSING, FDS_ENV, Handed, read_settings
from emostream.local.hub import Hub
from emostream.settings import Settings

log = logging.getLogger("emostream.local")
STABLE_AFTER_S = 30.0


def layout(settings: Settings) -> Layout:
    """Arena slots: audio windows small, frames the size of a downscaled frame."""
    side = settings.session.max_side
    c = settings.local
    return Layout(c.small_slot_kb * 1024, c.small_slots, side * side * 3, c.large_slots)


def gpus() -> int:
    """GPUs ONNX Runtime can use here (0 without CUDA)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return 0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return 1


@dataclass
class Child:
    role: str
    index: int
    proc: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    started: float = 0.0
    delay: float = 0.0
    gave_up: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, settings_fd: int) -> None:
        self.settings = settings
        self.settings_fd = settings_fd
        c = settings.local
        self.hub = Hub(settings.broker, settings.session)
        self.layout = layout(settings)
        self.ingests = [Child("ingest", i) for i in range(c.ingest_processes())]
        self.inference = [Child("inference", i) for i in range(c.inference_processes(gpus()))]
        self.arenas = {i: Arena.create(i, self.layout) for i in range(len(self.ingests))}
        self.run_dir = tempfile.mkdtemp(prefix="emostream-run-")
        self.peers = {i: os.path.join(self.run_dir, f"ingest-{i}.sock") for i in self.arenas}
        first = self._bind(self.settings.server.port)
        port = first.getsockname()[1]  # port 0: the one the kernel chose, for every socket
        self.public = {i: first if i == 0 else self._bind(port) for i in self.arenas}
        self.stopping = asyncio.Event()

    def _bind(self, port: int) -> socket.socket:
        """One listening socket per ingest, all on the port (``SO_REUSEPORT``): the kernel
        spreads new connections over them by address hash, so sessions spread evenly. (One
        shared socket let whichever process was idle take each connection: 80 % of the
        sessions ended on one ingest in a measured run.) The parent keeps every socket, so
        connections hashed to a restarting ingest wait in its backlog, not refused."""
        s = self.settings.server
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets (else Nagle
        # and delayed ACKs add about 40 ms to every answer)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((s.host, port))
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    def _handed(self, child: Child, control: int) -> Handed:
        lay = self.layout
        handed = Handed(
            control=control,
            settings=self.settings_fd,
            arenas={i: a.fd for i, a in self.arenas.items()},
            layout=(lay.small_bytes, lay.small, lay.large_bytes, lay.large),
        )
        if child.role == "ingest":
            handed.arenas = {child.index: self.arenas[child.index].fd}
            handed.public = self.public[child.index].fileno()
            handed.private = self.peers[child.index]
            handed.peers = self.peers
        return handed

    async def _start(self, child: Child) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handed = self._handed(child, theirs.fileno())
        env = {**os.environ, FDS_ENV: handed.to_env()}
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "emostream.local.child",
            child.role,
            str(child.index),
            env=env,
            pass_fds=handed.fds(),
        )
        theirs.close()
        child.started = time.monotonic()
        child.channel = channel = await Channel.open(mine)
        if child.role == "ingest":
            self.hub.attach_ingest(child.index, channel)
            handler = self.hub.handle_ingest
        else:
            self.hub.attach_inference(child.index, channel)
            handler = self.hub.handle_inference
        index = child.index
        serving = asyncio.create_task(channel.serve(lambda k, b: handler(index, channel, k, b)))
        child.tasks = [serving, asyncio.create_task(self._watch(child))]
        log.info("%s %d started (pid %d)", child.role, child.index, child.proc.pid)

    async def _watch(self, child: Child) -> None:
        assert child.proc is not None and child.channel is not None
        code = await child.proc.wait()
        child.channel.close()
        pid = child.proc.pid
        metrics.process_died(pid)
        if child.role == "ingest":
            self.hub.detach_ingest(child.index)
        else:
            self.hub.detach_inference(child.index)
        if self.stopping.is_set():
            return
        metrics.LOCAL_RESTARTS.labels(child.role).inc()
        if child.role == "inference" and code == EXIT_MODEL_MISSING:
            log.error("inference %d: the face model is missing; not restarting", child.index)
            child.gave_up = True
            return
        young = time.monotonic() - child.started < STABLE_AFTER_S
        c = self.settings.local
        child.delay = min(c.max_restart_backoff_s, child.delay * 2) if young else 0.0
        child.delay = max(child.delay, c.restart_backoff_s)
        log.warning(
            "%s %d (pid %d) ended with %s; restarting in %.1f s",
            child.role,
            child.index,
            pid,
            code,
            child.delay,
        )
        await asyncio.sleep(child.delay)
        if not self.stopping.is_set():
            await self._start(child)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        listener = None
        if self.settings.server.metrics_port:
            listener, _ = metrics.serve(
                self.settings.server.metrics_port, self.settings.server.metrics_host
            )
        log.info(
            "serving with %d ingest and %d inference processes",
            len(self.ingests),
            len(self.inference),
        )
        for child in [*self.inference, *self.ingests]:
            await self._start(child)
        await self.stopping.wait()
        await self._stop_children()
        if listener is not None:
            listener.shutdown()
        self._cleanup()
        return 0

    async def _stop_children(self) -> None:
        children = [c for c in [*self.ingests, *self.inference] if c.proc is not None]
        for c in children:
            assert c.proc is not None
            if c.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
        deadline = self.settings.worker.drain_timeout_s
        for c in children:
            assert c.proc is not None
            try:
                await asyncio.wait_for(c.proc.wait(), deadline)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                await c.proc.wait()
            for task in c.tasks:
                task.cancel()

    def _cleanup(self) -> None:
        for sock in self.public.values():
            sock.close()
        for arena in self.arenas.values():
            arena.close()
            os.close(arena.fd)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def main() -> None:
    fd = int(sys.argv[1])
    settings = read_settings(fd)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [parent]: %(message)s",
    )
    code = 0
    try:
        code = asyncio.run(Supervisor(settings, fd).run())
    finally:
        metrics.remove_dir()
    sys.exit(code)


def launch(settings: Settings) -> None:
    """Become the supervisor (``exec``, same pid): the metrics directory must be in the
    environment before ``prometheus_client`` is imported, and the CLI has imported it."""
    env = {**os.environ, **metrics.child_env(metrics.new_dir())}
    fd = os.memfd_create("emostream-settings", 0)  # inherited across exec, by design
    os.write(fd, pickle.dumps(settings))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "emostream.local.supervisor", str(fd)], env)


if __name__ == "__main__":
    main()
