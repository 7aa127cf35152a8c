"""Drive the demo page in headless Chromium against a real server: one run, one JSON result.

Run ONLY inside a private network namespace (tests/e2e/test_browser.py starts it through
``emostream.bench.netns.run_in_netns``): it starts the server on 127.0.0.1 and Chromium
with WebRTC, whose ICE gathers every interface of the namespace it runs in.

    netns-run -- python tests/e2e/browser_driver.py --out DIR --y4m FILE.y4m [--wav FILE.wav]

Writes into DIR: ``result.json`` (what the page showed), ``demo.png`` (a screenshot),
``server.log``, ``chromium.log`` and ``console.log``. Ends the server and Chromium (their
whole sessions) before it exits, whatever happened.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdp import Cdp, page_ws_url

from emostream.bench import netns

HERE = Path(__file__).resolve().parent

LABELS = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
EMPTY = "\u2013"  # what the page shows before a value (an en dash)
VOICE_LABELS = {"angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"}

SNAPSHOT_JS = """(() => {
  const t = (id) => {
    const e = document.getElementById(id);
    return e ? e.textContent.trim() : null;
  };
  const err = document.getElementById('error');
  const v = document.getElementById('video');
  return {
    state: t('state'), ice: t('ice'), dc: t('dc'), latency: t('latency'), rtt: t('rtt'),
    rate: t('rate'), model: t('model'), session: t('session'),
    error: err && !err.hidden ? err.textContent.trim() : '',
    labels: [...document.querySelectorAll('.face-label')]
      .map((e) => e.textContent.trim()).filter(Boolean),
    confs: [...document.querySelectorAll('.face-conf')]
      .map((e) => e.textContent.trim()).filter(Boolean),
    video: v ? [v.videoWidth, v.videoHeight] : null,
    speech: t('voice-speech'), voiceLabel: t('voice-label'), voiceModel: t('voice-model'),
    voiceSilent: document.getElementById('voice-label').dataset.silent || '',
    voiceUnsure: document.getElementById('voice-label').dataset.unsure || '',
    legends: document.querySelectorAll('.legend > *').length,
    panels: ['chart', 'voice-chart']
      .map((id) => Number(document.getElementById(id).dataset.panels || 0)),
  };
})()"""


def chromium_argv(
    chromium: str, profile: Path, y4m: Path, debug_port: int, wav: Path | None = None
) -> list[str]:
    # Without a file Chromium's fake microphone beeps; with one, it loops that recording.
    audio = [f"--use-file-for-fake-audio-capture={wav}"] if wav is not None else []
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        *audio,
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={debug_port}",
        "--window-size=1280,1000",
        "--hide-scrollbars",
        "about:blank",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def session_members(sid: int) -> list[int]:
    """Pids of the processes whose session id is ``sid`` (a process we started with setsid)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # state ppid pgrp session ...
            pids.append(int(entry.name))
    return pids


def end_session(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, the whole session that ``proc`` leads; the pids that remain."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(proc.pid) or [proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace_s
        while session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not session_members(proc.pid):
            break
    return session_members(proc.pid)


def snapshot(cdp: Cdp) -> dict[str, Any]:
    value: dict[str, Any] = cdp.evaluate(SNAPSHOT_JS)
    return value


def is_number(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True


def screenshot(cdp: Cdp, path: Path) -> None:
    data = cdp.call("Page.captureScreenshot", 30.0, format="png")["data"]
    path.write_bytes(base64.b64decode(data))


def drive(
    cdp: Cdp, url: str, out: Path, timeout_s: float, result: dict[str, Any], voice: bool
) -> None:
    cdp.call("Runtime.enable")
    cdp.call("Page.enable")
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        width=1280,
        height=1000,
        deviceScaleFactor=1,
        mobile=False,
    )
    cdp.call("Page.navigate", url=url)
    wait_until(
        "page load",
        lambda: cdp.evaluate(
            "document.readyState === 'complete' && !!document.getElementById('start')"
        ),
        30,
    )
    cdp.evaluate("document.getElementById('start').click()")

    def ready() -> dict[str, Any] | None:
        snap = snapshot(cdp)
        result["last"] = snap
        if snap["error"] and snap["state"] in ("failed", "closed"):
            raise RuntimeError(f"the page reports: {snap['error']}")
        if snap["state"] == "connected" and snap["labels"] and is_number(snap["latency"]):
            return snap
        return None

    result["first_face"] = wait_until("a face label on the page", ready, timeout_s)
    if voice:
        result["first_voice"] = wait_until(
            "a vocal expression label on the page",
            lambda: (s := snapshot(cdp))["voiceLabel"] not in (None, "", EMPTY, "silence") and s,
            timeout_s,
        )
        # The microphone's file has silence around the speech (and loops): the label must
        # give way to a greyed "silence", never keep the last class up.
        result["silence"] = wait_until(
            "the voice panel to show silence",
            lambda: (s := snapshot(cdp))["voiceLabel"] == "silence" and s,
            timeout_s,
        )
    # A few seconds more so the chart has some history in the screenshot (not a measurement).
    time.sleep(4)
    result["shown"] = snapshot(cdp)
    screenshot(cdp, out / "demo.png")
    result["screenshot"] = str(out / "demo.png")
    # The same with the preview mirrored (selfie view): the boxes must follow the face.
    cdp.evaluate("document.getElementById('mirror').click()")
    time.sleep(0.5)
    screenshot(cdp, out / "demo-mirrored.png")

    cdp.evaluate("document.getElementById('stop').click()")
    result["stopped"] = wait_until(
        "the page to show the session closed",
        lambda: (s := snapshot(cdp))["state"] == "closed" and s,
        15,
    )
    time.sleep(0.5)  # a few animation frames after Stop
    result["after_stop"] = snapshot(cdp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--y4m", type=Path, required=True)
    ap.add_argument("--wav", type=Path, help="the fake microphone's recording (else it beeps)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=90.0, help="for the first face label")
    args = ap.parse_args()
    if netns.has_default_route():
        print(
            "browser_driver: refusing to run: this network namespace has a route out; "
            "start it with netns-run",
            file=sys.stderr,
        )
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    result: dict[str, Any] = {"ok": False, "netns": netns.current_netns_id()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    cdp: Cdp | None = None
    profile = Path(tempfile.mkdtemp(prefix="emostream-chromium-"))
    try:
        port, debug_port = free_port(), free_port()
        server_log = open(out / "server.log", "wb")  # noqa: SIM115 (closed in finally)
        logs.append(server_log)
        procs["server"] = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "demo_server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"

        def server_ready() -> bool:
            if procs["server"].poll() is not None:
                raise RuntimeError(f"the server exited ({procs['server'].returncode})")
            return http_ok(f"{base}/readyz")

        wait_until("the server's /readyz", server_ready, 120, every_s=0.5)

        chrome_log = open(out / "chromium.log", "wb")  # noqa: SIM115 (closed in finally)
        logs.append(chrome_log)
        procs["chromium"] = subprocess.Popen(
            chromium_argv(
                args.chromium,
                profile,
                args.y4m.resolve(),
                debug_port,
                args.wav.resolve() if args.wav else None,
            ),
            stdin=subprocess.DEVNULL,
            stdout=chrome_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(profile)},
            start_new_session=True,
        )
        cdp = Cdp(page_ws_url(debug_port, 30))
        drive(cdp, f"{base}/", out, args.timeout, result, voice=args.wav is not None)
        result["ok"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        if cdp is not None and not (out / "demo.png").exists():
            try:
                screenshot(cdp, out / "demo-failure.png")
            except Exception as shot_exc:
                result["screenshot_error"] = repr(shot_exc)
    finally:
        if cdp is not None:
            (out / "console.log").write_text("\n".join(cdp.log) + "\n")
            with contextlib.suppress(Exception):
                cdp.close()
        result["sessions"] = {name: p.pid for name, p in procs.items()}
        result["leftover"] = {name: end_session(p) for name, p in procs.items()}
        for f in logs:
            f.close()
        shutil.rmtree(profile, ignore_errors=True)
        (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "traceback"}))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
