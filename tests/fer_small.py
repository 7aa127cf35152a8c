"""A small real FER2013 subset as a prepared .npz, for training tests (shared data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.training import face_data


def small_npz(data_root: Path, factory: pytest.TempPathFactory, train: int, val: int) -> Path:
    """``train`` real train faces and ``val`` real val faces, seeded, saved once."""
    splits = face_data.read(data_root / "fer2013", progress=False)
    small = {"train": splits["train"].limit(train, 1), "val": splits["val"].limit(val, 1)}
    path = factory.mktemp("data") / "fer-small.npz"
    face_data.save_npz(small, path)
    return path
