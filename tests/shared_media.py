"""The real media files of the shared data, for tests that stream them (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.paths import data_root


def media_file(name: str) -> Path:
    """``<data>/media/<name>``, or skip the test saying what is missing."""
    root = data_root()
    if root is None or not (root / "media" / name).is_file():
        pytest.skip(f"shared data not found: set EMOSTREAM_DATA (needs media/{name})")
    return root / "media" / name
