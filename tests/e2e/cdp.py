"""A minimal Chrome DevTools Protocol client over one websocket (synchronous).

Enough to drive one page from a test: call a method, evaluate JavaScript, keep the console
and exceptions for the log. No third-party dependency beyond ``websockets`` (which
``uvicorn[standard]`` brings).
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from websockets.sync.client import ClientConnection, connect


class CdpError(RuntimeError):
    pass


def page_ws_url(port: int, timeout_s: float = 30.0) -> str:
    """The websocket URL of the first page target of Chromium on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                targets = json.load(r)
            for t in targets:
                if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                    return str(t["webSocketDebuggerUrl"])
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise CdpError(f"no DevTools page target on port {port} after {timeout_s:.0f} s ({last})")


class Cdp:
    def __init__(self, ws_url: str) -> None:
        self.ws: ClientConnection = connect(ws_url, max_size=None, open_timeout=10)
        self._id = 0
        self.log: list[str] = []  # console messages and page exceptions, in order

    def close(self) -> None:
        self.ws.close()

    def _event(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            args = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            self.log.append(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text")
            self.log.append(f"exception: {text}")

    def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        mid = self._id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no answer in {timeout_s:.0f} s")
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            msg = json.loads(raw)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self._event(msg)

    def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        r = self.call(
            "Runtime.evaluate",
            timeout_s,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CdpError(f"JS error: {d.get('exception', {}).get('description') or d}")
        return r.get("result", {}).get("value")
