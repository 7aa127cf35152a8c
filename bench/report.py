"""Shared pieces of the benchmark reports: machine description, tables, section rewriting.

Every `emostream bench …` command owns one ``## …`` section of docs/BENCHMARKS.md and
rewrites only that one, so the benchmarks can be rerun independently without losing the
others' numbers.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

HEADER = (
    "# Benchmarks\n\n"
    "Measured by `emostream bench …`; each command rewrites only its own section, so the "
    "numbers of one section come from one run on the machine it describes.\n"
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` is often empty)."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    m = re.search(r"^MemTotal:\s+(\d+)\s+kB", _read("/proc/meminfo"), re.MULTILINE)
    return round(int(m.group(1)) / 2**20, 1) if m else None


def os_name() -> str:
    m = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', _read("/etc/os-release"), re.MULTILINE)
    name = m.group(1) if m else platform.system()
    return f"{name}, kernel {platform.release()}"


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def usable_cores() -> int:
    """Cores this process may run on (a container's affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_lines() -> list[str]:
    """Markdown bullet lines describing where the numbers were measured."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    ram = ram_gib()
    return [
        f"- CPU: {cpu_model()}, {usable_cores()} cores usable "
        f"({os.cpu_count()} logical), {platform.machine()}",
        f"- RAM: {ram} GiB" if ram is not None else "- RAM: unknown",
        f"- OS: {os_name()}",
        f"- Python {platform.python_version()}, onnxruntime {ort.__version__} "
        f"({', '.join(ort.get_available_providers())}), OpenCV {cv2.__version__}, "
        f"NumPy {np.__version__}",
    ]


def md_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None
) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l, r, c)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(marks[a] for a in align) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(text: str, heading: str, body: str) -> str:
    """``text`` with the ``## heading`` section replaced by ``body`` (appended if absent).

    A section runs from its ``## `` line to the next ``## `` line (deeper headings belong
    to it) or the end of the file.
    """
    body = body.strip("\n") + "\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == f"## {heading}"), None)
    if start is None:
        base = text.rstrip("\n")
        return (base + "\n\n" if base else "") + body
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + body + ("\n" + after if after else "")


def write_section(out: Path, heading: str, body: str) -> None:
    """Rewrite one section of ``out``, creating the file with a short header if missing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = out.read_text(encoding="utf-8") if out.is_file() else HEADER
    new = replace_section(text, heading, body)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(out)


def num(x: float, nd: int = 1) -> str:
    """A figure for a table: thousands separators, ``nd`` decimals."""
    return f"{x:,.{nd}f}"
