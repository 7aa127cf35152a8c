"""Private Linux network namespaces: the one helper of the WebRTC tests and benchmarks.

WebRTC gathers ICE candidates on every interface of the machine, and aiortc asks a public
STUN server unless told otherwise. Every WebRTC peer of a test or benchmark therefore runs
inside a network namespace that this module creates and that has no route out: loopback,
and a veth pair ``e0``/``e1`` whose both ends stay inside, ``e0`` holding a private test
address (10.213.0.1/24 by default). Peers in it can reach each other on that address and
nothing else. (A veth pair, not a ``dummy`` link: some kernels here have no dummy driver.
aioice never gathers 127.0.0.1, so loopback alone is not enough for two aiortc peers.)

Two ways in:

* :func:`enter_private_netns` moves the *calling process* into a new anonymous namespace
  (``unshare(CLONE_NEWNET)``). Nothing outlives the process: the namespace and its veth
  pair go away when the last process in it exits, even after ``kill -9``. This is what
  ``tests/netns_plugin.py`` does for the pytest run of ``tests/webrtc``.
* :func:`private_netns` / :func:`run_in_netns` create a *named* namespace with ``ip netns``,
  run commands in it, and delete it afterwards, killing whatever is left in it (the Python
  twin of ``shared/tools/netns-run``), for callers that must stay outside themselves: the
  browser test and ``emostream bench stream``, which re-runs itself in one.

:func:`current_private_netns` tells code inside whether it really is in such a namespace
(the kernel's namespace id and the routing table, not just an environment variable).

Both need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2 (``ip``). Neither sends a
packet anywhere. Standard library only: ``tests/netns_plugin.py`` imports this before
anything that could start a thread.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_ADDR",
    "ENV_NETNS",
    "ENV_UNAVAILABLE",
    "NetnsUnavailable",
    "current_netns_id",
    "current_private_netns",
    "enter_private_netns",
    "has_default_route",
    "netns_exec_argv",
    "private_netns",
    "run_in_netns",
    "udp_route_errno",
    "unavailable_reason",
]

DEFAULT_ADDR = "10.213.0.1/24"
#: Set by :func:`enter_private_netns` to ``"<ip> <namespace id>"``; inherited by children.
ENV_NETNS = "EMOSTREAM_TEST_NETNS"
#: Set by ``tests/netns_plugin.py`` when it could not enter a namespace: the reason.
ENV_UNAVAILABLE = "EMOSTREAM_TEST_NETNS_UNAVAILABLE"

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
_RTF_REJECT = 0x0200  # <linux/route.h>: "unreachable" entries in /proc/net/ipv6_route
_SETUP_TIMEOUT_S = 30.0


class NetnsUnavailable(RuntimeError):
    """This machine or process cannot create a network namespace (not root, no ``ip``)."""


def _ip_binary() -> str:
    if not sys.platform.startswith("linux"):
        raise NetnsUnavailable(f"network namespaces need Linux, not {sys.platform}")
    ip = shutil.which("ip")
    if ip is None:
        raise NetnsUnavailable("'ip' not found (apt-get install iproute2)")
    return ip


def _quiet(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a set-up command: no stdin, output captured, bounded in time, never raising."""
    return subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_SETUP_TIMEOUT_S,
        check=False,
    )


def _ip(*args: str) -> None:
    """Run ``ip ARGS`` and raise with its stderr on failure."""
    argv = [_ip_binary(), *args]
    proc = _quiet(argv)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _veth_setup(addr: str, peer_addr: str | None, netns: str | None = None) -> None:
    """Loopback up, veth pair e0/e1 with ``addr`` on e0, both up (in ``netns`` if named)."""
    ns = ["-n", netns] if netns else []
    _ip(*ns, "link", "set", "lo", "up")
    _ip(*ns, "link", "add", "e0", "type", "veth", "peer", "name", "e1")
    _ip(*ns, "addr", "add", addr, "dev", "e0")
    if peer_addr is not None:
        _ip(*ns, "addr", "add", peer_addr, "dev", "e1")
    _ip(*ns, "link", "set", "e0", "up")
    _ip(*ns, "link", "set", "e1", "up")


def current_netns_id() -> str:
    """The kernel's name of this process's network namespace, e.g. ``net:[4026531840]``."""
    return os.readlink("/proc/self/ns/net")


def has_default_route() -> bool:
    """Whether the current namespace has an IPv4 or IPv6 default route (read from /proc)."""
    # /proc/net is /proc/self/net: it shows the namespace of this process.
    route4 = Path("/proc/net/route")
    if route4.is_file():
        for line in route4.read_text().splitlines()[1:]:
            fields = line.split()
            # Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
                return True
    route6 = Path("/proc/net/ipv6_route")
    if route6.is_file():
        for line in route6.read_text().splitlines():
            fields = line.split()
            # dest dest_len src src_len next_hop metric refcnt use flags device
            if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00":
                if int(fields[8], 16) & _RTF_REJECT:
                    continue  # the kernel's "unreachable" null entry: no way out either
                return True
    return False


def udp_route_errno(host: str, port: int = 53) -> int:
    """``connect()`` a UDP socket to ``host`` and return the errno (0 if a route exists).

    On Linux a UDP ``connect()`` only looks up a route and fixes the peer address: it sends
    no packet. So this asks "could this namespace reach ``host``?" without traffic.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:  # e.g. IPv6 disabled: no route either
        return exc.errno or errno.EAFNOSUPPORT
    with sock:
        try:
            sock.connect((host, port))
        except OSError as exc:
            return exc.errno or -1
    return 0


def _native_thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _unshare_net() -> None:
    unshare = getattr(os, "unshare", None)  # Python >= 3.12
    if unshare is not None:
        try:
            unshare(CLONE_NEWNET)
        except PermissionError as exc:
            raise NetnsUnavailable(_eperm_message(exc.errno)) from exc
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(CLONE_NEWNET)) != 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES):
            raise NetnsUnavailable(_eperm_message(err))
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def _eperm_message(err: int | None) -> str:
    return (
        f"unshare(CLONE_NEWNET) not permitted ({os.strerror(err or errno.EPERM)}): "
        "a private network namespace needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    )


def enter_private_netns(
    addr: str = DEFAULT_ADDR,
    *,
    peer_addr: str | None = None,
    require_single_thread: bool = True,
) -> str:
    """Move this process into a new private network namespace; return its usable IP.

    The namespace has loopback up and a veth pair ``e0``/``e1``, both up, with ``addr`` on
    ``e0`` (and ``peer_addr`` on ``e1`` if given), and no route out. It is anonymous: it
    disappears when the last process in it exits, so there is nothing to clean up.

    Call it from the main thread before any other thread exists, i.e. before anything opens
    sockets or starts thread pools (onnxruntime, OpenBLAS, asyncio's executor):
    ``unshare(2)`` moves only the *calling thread*; threads that already exist stay in the
    old namespace, and only threads and processes created afterwards inherit the new one.
    Sockets opened before the call also stay in the old namespace. With
    ``require_single_thread`` (default) the call refuses to run when other threads exist.

    Raises :class:`NetnsUnavailable` when namespaces cannot be made here (not root, no
    ``ip``, not Linux) and ``RuntimeError`` for anything else that goes wrong.
    """
    iface = ipaddress.ip_interface(addr)
    ip_bin = _ip_binary()  # before unshare: fail early, still in the old namespace
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("enter_private_netns() must be called from the main thread")
    if require_single_thread and (n := _native_thread_count()) != 1:
        raise RuntimeError(
            f"enter_private_netns(): {n} threads exist; unshare() would move only the "
            "calling one, so call it before any thread starts"
        )
    _unshare_net()
    try:
        _veth_setup(str(iface), peer_addr)
    except RuntimeError as exc:
        raise RuntimeError(f"network namespace setup failed (using {ip_bin}): {exc}") from exc
    if has_default_route():
        raise RuntimeError("the new network namespace unexpectedly has a default route")
    ip = str(iface.ip)
    # The address is usable at once (IPv4 has no duplicate address detection): prove it.
    family = socket.AF_INET6 if iface.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((ip, 0))
    os.environ[ENV_NETNS] = f"{ip} {current_netns_id()}"
    os.environ.pop(ENV_UNAVAILABLE, None)
    return ip


def current_private_netns() -> str | None:
    """The namespace IP if this process is inside one made here (entered or run in), else None.

    Checks the kernel, not just the environment: the namespace recorded in
    ``EMOSTREAM_TEST_NETNS`` must be the one this process is in, and it must have no
    default route. Returns ``None`` otherwise.
    """
    value = os.environ.get(ENV_NETNS, "")
    ip, _, ns_id = value.partition(" ")
    if not ip or not ns_id:
        return None
    try:
        if ns_id != current_netns_id():
            return None
    except OSError:
        return None
    if has_default_route():
        return None
    return ip


# Loads this very file (not whichever ``emostream`` the child's sys.path would find).
_PROBE = (
    "import importlib.util as u, sys; "
    "s = u.spec_from_file_location('netns_probe', sys.argv[1]); m = u.module_from_spec(s); "
    "s.loader.exec_module(m); print(m.enter_private_netns(sys.argv[2]))"
)


@functools.cache
def unavailable_reason(addr: str = DEFAULT_ADDR) -> str | None:
    """``None`` if :func:`enter_private_netns` works here, else why not (a skip reason).

    Tries it for real in a short-lived child process; this process is not touched.
    """
    try:
        _ip_binary()
    except NetnsUnavailable as exc:
        return str(exc)
    proc = _quiet([sys.executable, "-I", "-c", _PROBE, str(Path(__file__).resolve()), addr])
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"namespace probe failed ({proc.returncode})"


def netns_exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside the named namespace ``name``."""
    return [_ip_binary(), "netns", "exec", name, *argv]


@contextmanager
def private_netns(addr: str = DEFAULT_ADDR, *, peer_addr: str | None = None) -> Iterator[str]:
    """A named namespace (``ip netns add``) set up as above; yields its name.

    On exit every process still in it is killed and the namespace deleted. Use
    :func:`netns_exec_argv` to start processes in it. Unlike :func:`enter_private_netns`,
    a named namespace survives a ``kill -9`` of this process (``ip netns del`` it then).
    """
    ip_bin = _ip_binary()
    name = f"emotest{os.getpid()}_{secrets.token_hex(3)}"
    added = _quiet([ip_bin, "netns", "add", name])
    if added.returncode != 0:
        err = added.stderr.strip()
        if "Operation not permitted" in err or "Permission denied" in err:
            raise NetnsUnavailable(f"ip netns add: {err} (needs root)")
        raise RuntimeError(f"ip netns add {name} failed: {err}")
    try:
        _veth_setup(str(ipaddress.ip_interface(addr)), peer_addr, netns=name)
        yield name
    finally:
        for pid in _quiet([ip_bin, "netns", "pids", name]).stdout.split():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        _quiet([ip_bin, "netns", "del", name])


def run_in_netns(
    argv: Sequence[str],
    *,
    addr: str = DEFAULT_ADDR,
    peer_addr: str | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, **kwargs)`` inside a fresh named namespace, deleted afterwards.

    The command gets ``EMOSTREAM_TEST_NETNS`` in its environment (added to ``env`` if
    given), so :func:`current_private_netns` works in it as after
    :func:`enter_private_netns`.
    """
    with private_netns(addr, peer_addr=peer_addr) as name:
        ns_id = f"net:[{os.stat(f'/run/netns/{name}').st_ino}]"
        env = dict(kwargs.pop("env", None) or os.environ)
        env[ENV_NETNS] = f"{ipaddress.ip_interface(addr).ip} {ns_id}"
        return subprocess.run(netns_exec_argv(name, argv), env=env, **kwargs)
