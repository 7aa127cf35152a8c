"""Detectors are plugins: a backend is one file in ``models/detectors/plugins``, found by
looking; a plugin that fails to import is reported and the others stay available."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from emostream.models import detectors
from emostream.models.detectors import plugins
from emostream.models.detectors.base import DetectorConfigBase
from emostream.settings import Settings, leaf, reference_markdown

PLUGINS = "emostream.models.detectors.plugins"

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
    assert {"blazeface", "haar", "yunet"} <= set(detectors.BACKENDS)
    assert detectors.UNAVAILABLE == {}
    assert detectors.default_detector().type == "yunet"


def test_only_the_plugins_folder_is_searched() -> None:
    """The BlazeFace helpers beside ``plugins/`` are not imported as plugins."""
    found = detectors.discover()
    names = {"blazeface", "haar", "mtcnn", "retinaface", "yunet"}
    assert set(found.backends) == names and found.unavailable == {}
    assert {c.__module__ for c in found.backends.values()} == {f"{PLUGINS}.{n}" for n in names}


def test_a_config_without_a_type_is_the_default_backend() -> None:
    adapter: TypeAdapter[object] = TypeAdapter(detectors.DetectorConfig)
    assert type(adapter.validate_python({})).__name__ == "YuNetConfig"
    assert type(adapter.validate_python({"type": "haar"})).__name__ == "HaarConfig"
    with pytest.raises(ValueError):
        adapter.validate_python({"type": "no-such-detector"})


@pytest.fixture()
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A second folder of the plugins package: a file written there is a plugin."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.setattr(plugins, "__path__", [*plugins.__path__, str(folder)])
    yield folder
    for name in [m for m in sys.modules if m.startswith(f"{PLUGINS}.")]:
        if name.rsplit(".", 1)[1] not in ("blazeface", "haar"):
            sys.modules.pop(name)


def test_adding_a_detector_is_adding_one_file(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file in the plugins folder is a new backend: no registry, settings or CLI edits."""
    (plugin_dir / "tiny.py").write_text(textwrap.dedent(PLUGIN))
    found = detectors.discover()
    assert "tiny" in found.backends and found.unavailable == {}
    backend = found.backends["tiny"]
    config = backend.config_class.model_validate({"type": "tiny", "size": 9})
    monkeypatch.setattr(detectors, "BACKENDS", found.backends)
    det = detectors.create_detector(config, plugin_dir)
    assert det.detect(None)[0].box == (0, 0, 9, 9)  # type: ignore[arg-type]


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A plugin whose package is missing (ImportError), or that raises anything else on
    import, is listed with its reason and logged; every other detector still loads."""
    (plugin_dir / "tiny.py").write_text(textwrap.dedent(PLUGIN))
    (plugin_dir / "needs_gpu.py").write_text(
        "import emostream_no_such_package  # noqa: F401\n" + textwrap.dedent(PLUGIN)
    )
    (plugin_dir / "buggy.py").write_text("raise RuntimeError('bad plugin')\n")
    (plugin_dir / "empty.py").write_text("X = 1\n")
    with caplog.at_level(logging.WARNING, logger=detectors.__name__):
        found = detectors.discover()

    assert set(found.backends) == {"blazeface", "haar", "mtcnn", "retinaface", "yunet", "tiny"}
    assert found.unavailable == {
        "needs_gpu": "ModuleNotFoundError: No module named 'emostream_no_such_package'",
        "buggy": "RuntimeError: bad plugin",
        "empty": "TypeError: defines no FaceDetector subclass",
    }
    assert f"{PLUGINS}.needs_gpu" not in sys.modules
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'needs_gpu' is unavailable: ModuleNotFoundError" in m for m in logged)
    assert any("'buggy' is unavailable: RuntimeError: bad plugin" in m for m in logged)

    # the available ones are built and chosen as usual; naming a missing one says why
    adapter: TypeAdapter[object] = TypeAdapter(detectors.config_union(found))
    assert type(adapter.validate_python({"type": "haar"})).__name__ == "HaarConfig"
    assert type(adapter.validate_python({"type": "tiny"})).__name__ == "TinyConfig"
    with pytest.raises(ValidationError, match="'needs_gpu' face detector is unavailable here"):
        adapter.validate_python({"type": "needs_gpu"})
    monkeypatch.setattr(detectors, "BACKENDS", found.backends)
    monkeypatch.setattr(detectors, "UNAVAILABLE", found.unavailable)
    with pytest.raises(detectors.DetectorUnavailableError, match="No module named"):
        detectors.create_detector(DetectorConfigBase(type="needs_gpu"), plugin_dir)
    haar = detectors.create_detector(found.backends["haar"].config_class(), plugin_dir)
    assert haar.name == "haar"


def test_the_settings_reference_lists_unavailable_detectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`emostream settings` (and docs/SETTINGS.md) name the backends, and any plugin that
    could not be imported here with its reason."""
    assert "unavailable" not in leaf("detector.type").description
    monkeypatch.setitem(
        detectors.UNAVAILABLE, "centerface", "ImportError: no module named 'cv2.dnn'"
    )
    text = leaf("detector.type").description
    assert text == (
        "the face detector backend: blazeface, haar, mtcnn, retinaface, yunet; "
        "unavailable here: centerface (ImportError: no module named 'cv2.dnn')"
    )
    assert "unavailable here: centerface" in reference_markdown()


def test_the_detector_is_chosen_by_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_DETECTOR", "haar")  # the flat name of the first releases
    monkeypatch.setenv("EMOSTREAM_DETECTOR_MAX_SIDE", "400")
    assert (Settings().detector.type, Settings().detector.max_side) == ("haar", 400)  # type: ignore[attr-defined]
    monkeypatch.delenv("EMOSTREAM_DETECTOR")
    monkeypatch.setenv("EMOSTREAM_DETECTOR__TYPE", "haar")  # the nested name
    assert Settings().detector.type == "haar"
