"""How the benchmarks report: machine description, tables, charts, and their own section.

Every `emostream bench …` command owns one ``## …`` section of docs/BENCHMARKS.md and
rewrites only that one, so the benchmarks can be rerun independently without losing the
others' numbers. A bench builds its section with :class:`Section` (measured when, with
what command, on which machine; then its tables, figures and reading) and ``write``s it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from emostream.bench.measure import BatchTimes

#: The columns "the classifier alone, by batch size" has in every bench, before its own one.
BATCH_HEADER = (
    "batch",
    "model ms/batch",
    "model faces/s",
    "predict() ms/batch",
    "predict() faces/s",
)

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


def machine_lines(providers: Sequence[str] = ()) -> list[str]:
    """Markdown bullet lines describing where the numbers were measured; with the GPU's
    name when one of ``providers`` (what ran the model) is a GPU provider."""
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
        *gpu_lines(providers),
    ]


def gpu_lines(providers: Sequence[str]) -> list[str]:
    """The GPU's name when a GPU provider ran the model (the CPU lines cannot know it)."""
    if not any(p.startswith(("CUDA", "Tensorrt")) for p in providers):
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ["- GPU: unknown (no nvidia-smi)"]
    q = "--query-gpu=name,memory.total,driver_version"
    res = subprocess.run(
        [smi, q, "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    names = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    return [f"- GPU: {n} (name, memory, driver)" for n in names] or ["- GPU: unknown"]


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


def batch_rows(
    batches: Sequence[BatchTimes], last: Callable[[BatchTimes], object]
) -> list[list[object]]:
    """The rows under :data:`BATCH_HEADER`, each with the bench's own ``last(row)`` cell."""
    return [
        [
            b.batch,
            num(b.model_ms, 2),
            num(b.model_fps, 0),
            num(b.predict_ms, 2),
            num(b.predict_fps, 0),
            last(b),
        ]
        for b in batches
    ]


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


def read_section(out: Path, heading: str) -> str:
    """The ``## heading`` section of ``out`` as a bench wrote it (up to the next ``## ``)."""
    text = out.read_text(encoding="utf-8")
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


@contextmanager
def chart(path: Path, title: str, size: tuple[float, float]) -> Iterator[Axes]:
    """Axes to draw on; saved as a PNG at ``path`` with ``title`` when the block ends."""
    with charts(path, "", size, 1, 1) as axes:
        yield axes[0][0]
        axes[0][0].set_title(title, fontsize=10)


@contextmanager
def charts(
    path: Path, title: str, size: tuple[float, float], rows: int, cols: int
) -> Iterator[list[list[Axes]]]:
    """A ``rows`` x ``cols`` grid of axes (``axes[row][col]``), saved as one PNG at
    ``path`` with ``title`` (if any) above them when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(rows, cols, figsize=size, dpi=110, squeeze=False)
    try:
        yield [list(row) for row in grid]
        if title:
            fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)


class Section:
    """One bench's ``## heading`` section of ``out``, built block by block.

    Made when the run starts, so it knows the start time, wall time and load average the
    "Measured …" line reports; then a bench adds its machine lines, paragraphs, tables and
    figures in order, and :meth:`write` replaces its section of ``out`` (nothing else).
    """

    def __init__(self, heading: str, command: str, out: Path) -> None:
        self.heading = heading
        self.command = command
        self.out = Path(out)
        self.started = datetime.now(UTC)
        self.load_before = os.getloadavg()[0]
        self._t0 = time.perf_counter()
        self._blocks: list[str] = []

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self._t0

    @property
    def load_now(self) -> float:
        return os.getloadavg()[0]

    def add(self, *blocks: str) -> Section:
        """Paragraphs (or any markdown blocks), a blank line between each."""
        self._blocks += blocks
        return self

    def measured(self, *, note: str = "", then: str = "") -> Section:
        """``Measured <date> UTC with `<command>` (the whole run took N s<note>).<then>``"""
        return self.add(
            f"Measured {self.started:%Y-%m-%d %H:%M} UTC with `{self.command}` (the whole run "
            f"took {self.wall_s:.0f} s{note}).{then}"
        )

    def machine(self, *bullets: str, providers: Sequence[str] = ()) -> Section:
        """The machine's lines (with the GPU's when ``providers`` used one), then ``bullets``."""
        return self.add("\n".join([*machine_lines(providers), *bullets]))

    def sub(self, title: str) -> Section:
        return self.add(f"### {title}")

    def table(
        self, header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None
    ) -> Section:
        return self.add(md_table(header, rows, align))

    def figure(self, alt: str, path: Path | None) -> Section:
        """An image, linked relative to ``out``; nothing when there is no chart."""
        if path is None:
            return self
        return self.add(f"![{alt}]({os.path.relpath(path, self.out.parent)})")

    def text(self) -> str:
        return "\n\n".join([f"## {self.heading}", *self._blocks]) + "\n"

    def write(self) -> str:
        """Rewrite this section of ``out``; return its markdown."""
        text = self.text()
        write_section(self.out, self.heading, text)
        return text
