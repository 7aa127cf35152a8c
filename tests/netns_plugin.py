"""pytest plugin: run this whole pytest process inside a private network namespace.

    python -m pytest tests/webrtc -p tests.netns_plugin

(``tests/test_netns_webrtc.py`` runs exactly that as a subprocess of the main test run, so
the main process stays in the normal namespace, where Redis and Prometheus listen on
loopback.) The plugin enters the namespace in ``pytest_load_initial_conftests``, the
earliest hook a ``-p`` plugin gets: before any conftest is imported, so before numpy,
onnxruntime or anything else could start a thread (``unshare`` moves only the calling
thread; see :func:`emostream.bench.netns.enter_private_netns`). Every thread, event loop
and subprocess of the run is created afterwards and is inside.

When namespaces cannot be made here (not root), the reason goes to
``EMOSTREAM_TEST_NETNS_UNAVAILABLE`` and ``tests/webrtc/conftest.py`` skips every test with
it: nothing in ``tests/webrtc`` ever runs outside a namespace. Any other failure while
entering stops the run.
"""

from __future__ import annotations

import os

import pytest

from emostream.bench import netns  # standard library only: starts no thread


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    if netns.current_private_netns() is not None:
        return  # already inside (e.g. started under run_in_netns or by a parent that entered)
    try:
        netns.enter_private_netns()
    except netns.NetnsUnavailable as exc:
        os.environ[netns.ENV_UNAVAILABLE] = str(exc)
    except RuntimeError as exc:
        raise pytest.UsageError(
            f"netns_plugin: could not enter a network namespace: {exc}"
        ) from exc


def pytest_report_header(config: pytest.Config) -> str:
    ip = netns.current_private_netns()
    if ip is not None:
        return f"network namespace: private ({netns.current_netns_id()}), {ip}, no route out"
    reason = os.environ.get(netns.ENV_UNAVAILABLE, "not entered")
    return f"network namespace: NOT private ({reason}); tests/webrtc will be skipped"
