"""A real ``redis-server`` for tests (``emostream.bench.procs.RedisServer``): its own process
on a free loopback port, no disk; the test is skipped where redis-server is not installed.

``make_tls`` writes a throw-away CA and a server certificate for 127.0.0.1 (openssl), for
a TLS-only server; skipped where openssl is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from emostream.bench import procs


class RedisServer(procs.RedisServer):
    def __init__(
        self,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        password: str | None = None,
        tls: procs.RedisTls | None = None,
    ) -> None:
        if procs.REDIS_SERVER is None:
            pytest.skip("redis-server not installed (Debian package redis-server)")
        super().__init__(workdir, host, port, password=password, tls=tls)


def make_tls(folder: Path, host: str = "127.0.0.1") -> procs.RedisTls:
    """A self-signed CA and a certificate it signed for ``host`` (an IP address)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed (Debian package openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    ext = folder / "san.ext"
    ext.write_text(f"subjectAltName=IP:{host}\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=emostream test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return procs.RedisTls(ca=ca, cert=cert, key=key)
