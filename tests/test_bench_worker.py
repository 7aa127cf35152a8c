"""`emostream bench worker` writes its section and chart from real faces (no timing limits:
the figures depend on the machine, so only their presence and sign are checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.bench.batch_sizes import SECTION, run_worker_bench
from emostream.bench.report import HEADER
from emostream.models.face import FaceAnalyzer


def _rows(section: str, heading: str) -> list[list[str]]:
    """Body rows of the first table after ``### heading``."""
    part = section.split(f"### {heading}", 1)[1].split("###", 1)[0]
    lines = [ln for ln in part.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _num(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x"))


@pytest.mark.data
def test_writes_section_table_and_chart(
    tmp_path: Path, analyzer: FaceAnalyzer, data_root: Path
) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(HEADER + "\n## Other (kept)\n\nuntouched\n", encoding="utf-8")
    res = run_worker_bench([2, 1], 1, out, analyzer=analyzer, data=data_root, warmup=1)

    text = out.read_text(encoding="utf-8")
    assert f"## {SECTION}" in text and "## Other (kept)\n\nuntouched" in text
    assert f"**{analyzer.provider}**" in res.section and "- CPU:" in res.section
    assert res.provider == analyzer.provider
    assert "FER2013 val" in res.crops_src  # the real faces, not the fallback

    clf = _rows(text, "The classifier alone")
    assert [r[0] for r in clf] == ["1", "2"]
    assert all(_num(c) > 0 for r in clf for c in r[1:5])
    frames = _rows(text, "The worker path")
    assert [r[0] for r in frames] == ["1", "2"]
    assert all(_num(c) > 0 for r in frames for c in r[1:])  # woman2.mp4 has a face per frame
    assert all(r.model_fps > 0 and r.predict_fps > 0 for r in res.classifier)
    assert all(r.frames_per_s > 0 and r.faces > 0 for r in res.frames)

    assert res.chart == tmp_path / "bench-worker.png"
    assert res.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](bench-worker.png)" in text

    # a rerun replaces the section instead of appending another
    run_worker_bench([1], 1, out, analyzer=analyzer, data=data_root, warmup=0)
    text = out.read_text(encoding="utf-8")
    assert text.count(f"## {SECTION}") == 1
    assert [r[0] for r in _rows(text, "The classifier alone")] == ["1"]


@pytest.mark.data
def test_falls_back_to_detector_crops_of_the_photos(
    tmp_path: Path, analyzer: FaceAnalyzer, media: Path
) -> None:
    data = tmp_path / "data"  # media/ but no fer2013/
    data.mkdir()
    (data / "media").symlink_to(media)
    res = run_worker_bench(
        [1], 1, tmp_path / "B.md", analyzer=analyzer, data=data, warmup=0, frame_batch_max=0
    )
    assert "detector crops" in res.crops_src and res.frames == []
    assert res.classifier[0].model_fps > 0
    assert "### The worker path" not in res.section


def test_no_faces_is_an_error_not_noise(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    with pytest.raises(SystemExit, match="real faces"):
        run_worker_bench([1], 1, tmp_path / "B.md", analyzer=analyzer, data=tmp_path)
    assert not (tmp_path / "B.md").exists()


def test_rejects_bad_batches(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    with pytest.raises(ValueError, match="positive"):
        run_worker_bench([0, 1], 1, tmp_path / "B.md", analyzer=analyzer)
    with pytest.raises(ValueError, match="repeats"):
        run_worker_bench([1], 0, tmp_path / "B.md", analyzer=analyzer)
