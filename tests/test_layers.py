"""The layers run one way: the core loads without any transport, and only the WebRTC
transport (and the WebRTC client tools) import aiortc."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: server code allowed to import aiortc: the WebRTC transport only
TRANSPORT = ROOT / "stream" / "transports" / "webrtc"
#: client-side code that publishes over WebRTC (not part of the server's session path)
CLIENTS = {ROOT / "stream" / "client.py", ROOT / "stream" / "filesource.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_webrtc_transport_imports_aiortc_on_the_server_side() -> None:
    product = [ROOT / d for d in ("emostream", "stream", "models", "training", "dashboards")]
    offenders = []
    for folder in product:
        for path in folder.rglob("*.py"):
            if path.is_symlink() or TRANSPORT in path.parents or path in CLIENTS:
                continue
            if any(n == "aiortc" or n.startswith("aiortc.") for n in _imports(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_core_never_imports_a_transport() -> None:
    def linked(p: Path) -> bool:  # emostream/stream and the like: other layers
        return any((ROOT / q).is_symlink() for q in p.relative_to(ROOT).parents)

    core = [p for p in (ROOT / "emostream").rglob("*.py") if not linked(p)]
    offenders = [
        str(p.relative_to(ROOT))
        for p in core
        if any(n.startswith("emostream.stream.transports") for n in _imports(p))
        and "cli" not in p.parts  # the commands compose the app
    ]
    assert offenders == []


def test_settings_modalities_and_the_wire_load_without_aiortc() -> None:
    code = (
        "import sys, emostream.settings, emostream.broker.wire, emostream.modalities as m\n"
        "m.registered()\n"
        "import emostream.stream.session_manager\n"
        "print('aiortc' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False", out.stderr
