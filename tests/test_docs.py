"""The docs that carry the contract stay true to the code (docs/ARCHITECTURE.md, METRICS.md)."""

from __future__ import annotations

import re
from pathlib import Path

from emostream import metrics

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _exported() -> set[str]:
    """Metric families as documented: counters by their ``_total`` name."""
    names = metrics.exported_names()
    return {n for n in names if f"{n}_total" not in names}


def test_metrics_md_lists_exactly_the_exported_metrics() -> None:
    text = (DOCS / "METRICS.md").read_text()
    listed = set(re.findall(r"^\| `(emostream_[a-z_]+)` \|", text, re.MULTILINE))
    assert listed == _exported()


def test_architecture_names_every_metric() -> None:
    text = (DOCS / "ARCHITECTURE.md").read_text()
    section = text.split("### Metric names", 1)[1].split("\n### ", 1)[0]
    listed = {f"emostream_{n}" for n in re.findall(r"`([a-z_]+)`", section)}
    assert _exported() <= listed


def test_architecture_names_files_that_exist() -> None:
    """Every repository path the layout and the pipeline sections name is there."""
    root = DOCS.parent
    text = (DOCS / "ARCHITECTURE.md").read_text()
    contract = text.split("\n### How a new modality plugs in", 1)[0]  # after: files to add
    paths = set(
        re.findall(r"`((?:emostream|stream|models|training|bench|dashboards)/[\w/.]+)`", contract)
    )
    missing = sorted(p for p in paths if not (root / p.rstrip("/")).exists())
    assert not missing, missing
