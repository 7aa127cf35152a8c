"""Detectors are plugins: a backend is one file in ``models/detectors``, found by looking."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from emostream.models import detectors
from emostream.settings import Settings

PLUGIN = """
from pathlib import Path
from typing import Literal

import numpy as np

from emostream.models.detectors.base import Detection, DetectorConfigBase, FaceDetector


class TinyConfig(DetectorConfigBase):
    type: Literal["tiny"] = "tiny"
    size: int = 7


class TinyDetector(FaceDetector):
    name = "tiny"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config, model_root: Path) -> "TinyDetector":
        return cls(config)

    def detect(self, image: np.ndarray) -> list[Detection]:
        return [Detection((0, 0, self.config.size, self.config.size), 1.0)]
"""


def test_the_shipped_backends_are_found() -> None:
    assert {"blazeface", "haar"} <= set(detectors.BACKENDS)
    assert detectors.default_detector().type == "blazeface"


def test_a_config_without_a_type_is_the_default_backend() -> None:
    adapter: TypeAdapter[object] = TypeAdapter(detectors.DetectorConfig)
    assert type(adapter.validate_python({})).__name__ == "BlazeFaceConfig"
    assert type(adapter.validate_python({"type": "haar"})).__name__ == "HaarConfig"
    with pytest.raises(ValueError):
        adapter.validate_python({"type": "no-such-detector"})


def test_adding_a_detector_is_adding_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file in the package is a new backend: no registry, settings or CLI edits."""
    (tmp_path / "tiny.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.setattr(detectors, "__path__", [*detectors.__path__, str(tmp_path)])
    try:
        found = detectors._discover()
        assert "tiny" in found
        backend = found["tiny"]
        config = backend.config_class.model_validate({"type": "tiny", "size": 9})
        monkeypatch.setattr(detectors, "BACKENDS", found)
        det = detectors.create_detector(config, tmp_path)
        assert det.detect(None)[0].box == (0, 0, 9, 9)  # type: ignore[arg-type]
    finally:
        sys.modules.pop("emostream.models.detectors.tiny", None)


def test_the_detector_is_chosen_by_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_DETECTOR", "haar")  # the flat name of the first releases
    monkeypatch.setenv("EMOSTREAM_DETECTOR_MAX_SIDE", "400")
    assert (Settings().detector.type, Settings().detector.max_side) == ("haar", 400)  # type: ignore[attr-defined]
    monkeypatch.delenv("EMOSTREAM_DETECTOR")
    monkeypatch.setenv("EMOSTREAM_DETECTOR__TYPE", "haar")  # the nested name
    assert Settings().detector.type == "haar"
