"""A real ``redis-server`` for tests (``emostream.bench.procs.RedisServer``): its own process
on a free loopback port, no disk; the test is skipped where redis-server is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.bench import procs


class RedisServer(procs.RedisServer):
    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        if procs.REDIS_SERVER is None:
            pytest.skip("redis-server not installed (Debian package redis-server)")
        super().__init__(workdir, host, port)
