"""The shared bench helpers, and `bench face` / `bench stream` end to end on a scratch file.

No timing limits: the figures depend on the machine, so only the structure of what the
benches write is checked (headings, columns, one row per measured case).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from emostream.bench import netns, procs
from emostream.bench.report import HEADER, Section, read_section


def _table_header(section: str, first: str) -> list[str]:
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_section_rewrites_only_its_own(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "BENCHMARKS.md"
    out.parent.mkdir()
    out.write_text(HEADER + "\n## Before\n\nkept\n\n## Mine\n\nold\n\n## After\n\nkept too\n")
    chart = out.parent / "mine.png"
    s = Section("Mine", "emostream bench mine", out).measured(note="; extra")
    s.sub("Part").table(["a", "b"], [[1, 2]]).figure("a chart", chart).figure("none", None)
    text = s.write()

    assert text.startswith("## Mine\n\nMeasured ") and "`emostream bench mine`" in text
    assert "(the whole run took 0 s; extra)." in text
    assert "### Part\n\n| a | b |\n| --- | ---: |\n| 1 | 2 |\n\n![a chart](mine.png)\n" in text
    whole = out.read_text()
    assert "## Before\n\nkept\n\n## Mine" in whole and whole.endswith("## After\n\nkept too\n")
    assert "old" not in whole
    assert read_section(out, "Mine") == text


def test_metric_by_sums_per_label() -> None:
    text = "\n".join(
        [
            "# HELP emostream_frames_dropped_total dropped",
            'emostream_frames_dropped_total{modality="face",reason="stale"} 3.0',
            'emostream_frames_dropped_total{modality="face",reason="superseded"} 2.0',
            'emostream_frames_dropped_total{modality="voice",reason="stale"} 7.0',
            'emostream_frames_dropped_total_created{modality="face",reason="stale"} 1.7e9',
        ]
    )
    name = "emostream_frames_dropped_total"
    assert procs.metric_by(text, name, "reason", modality="face") == {
        "stale": 3.0,
        "superseded": 2.0,
    }
    assert procs.metric(text, name, modality="face") == 5.0
    assert procs.metric(text, name) == 12.0


@pytest.mark.slow
@pytest.mark.data
def test_bench_face_writes_its_section(tmp_path: Path, repo: object, media: Path) -> None:
    from emostream.bench.face import SECTION, run

    out = tmp_path / "BENCHMARKS.md"
    text = run(out=out, frames=10, batches=(1, 2), skip_fer=True)

    assert read_section(out, SECTION) == text
    for heading in ("Per frame: detect + classify", "The model alone, by batch size", "Reading"):
        assert f"\n### {heading}\n" in text
    assert _table_header(text, "pipeline")[-1] == "fer / ours (median)"
    assert _table_header(text, "batch")[-1] == "repeats"
    assert "The fer baseline was skipped with `--skip-fer`." in text
    assert (tmp_path / "bench-face.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.data
def test_bench_stream_runs_in_a_namespace_of_its_own(
    tmp_path: Path, repo: object, media: Path
) -> None:
    """The bench re-runs itself in a private namespace, which is gone afterwards."""
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(f"bench stream needs a private network namespace: {reason}")
    from emostream.bench.stream import SECTION

    out = tmp_path / "BENCHMARKS.md"
    argv = [*procs.EMOSTREAM, "bench", "stream", "--clients", "1", "--seconds", "2"]
    proc = subprocess.Popen(
        [*argv, "--out", str(out)],
        env=procs.base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=300)  # a guard against a hang, not a measurement
    assert proc.returncode == 0, stderr
    text = read_section(out, SECTION)
    assert stdout.strip() == text.strip()
    assert _table_header(text, "clients")[-1] == "clients' CPU %"
    row = next(ln for ln in text.splitlines() if ln.startswith("| 1 |"))
    assert "failed" not in row
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(line.startswith(f"emotest{proc.pid}_") for line in names.splitlines())
