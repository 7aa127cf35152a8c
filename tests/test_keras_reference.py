"""scripts/keras_reference.py (``make keras-reference``) keeps up with the API it uses.

The script runs real Keras in a throwaway venv with TensorFlow, which the tests never
install; here it is imported, its inputs are built by the current detector and
preprocessing API, and its plumbing (subprocess, arrays, the fixture's layout) runs with a
numpy stand-in for Keras.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from emostream.models import detectors
from emostream.models.repository import ModelRepository

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "keras_reference.py"
FIXTURE = Path(__file__).parent / "fixtures" / "fer_keras_reference.npz"

#: Stands in for Keras: uniform scores over fer's seven classes, one row per input.
FAKE_KERAS = """
import json, sys
import numpy as np
x = np.load(sys.argv[2])
assert x.ndim == 4 and x.shape[1:] == (1, 64, 64), x.shape
np.save(sys.argv[3], np.full((len(x), 7), 1 / 7, dtype=np.float32))
print("noise a real run prints")
print(json.dumps({"tensorflow": "stand-in", "keras": "stand-in"}))
"""


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("keras_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)  # every import it makes resolves
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_script_uses_the_current_detector_api(script: ModuleType) -> None:
    assert script.create_detector is detectors.create_detector
    inspect.signature(detectors.create_detector).bind(None, Path("models"))
    compile(script.KERAS_SCRIPT, "keras_run.py", "exec")


def test_its_plumbing_writes_the_fixture_layout(script: ModuleType, tmp_path: Path) -> None:
    """Synthetic inputs through the stand-in: the arrays and keys test_parity reads."""
    rng = np.random.default_rng(0)
    inputs = script.ReferenceInputs(
        random_inputs=rng.uniform(-1, 1, (2, 1, 64, 64)).astype(np.float32),
        fer_files=["fer2013/val/angry/a.jpg"],
        fer_inputs=np.zeros((1, 1, 64, 64), np.float32),
        media_files=[],
        media_boxes=[],
        media_inputs=np.zeros((0, 1, 64, 64), np.float32),
    )
    h5 = tmp_path / "emotion_model.hdf5"
    h5.write_bytes(b"not read by the stand-in")
    outputs, versions = script.run_keras(Path(sys.executable), h5, inputs.all, FAKE_KERAS)
    assert outputs.shape == (3, 7) and versions["keras"] == "stand-in"
    out = tmp_path / "reference.npz"
    script.write_fixture(out, inputs, outputs, versions)
    with np.load(out) as made, np.load(FIXTURE) as committed:
        assert sorted(made.files) == sorted(committed.files)
        assert made["media_boxes"].shape == (0, 4)
        assert made["fer_keras"].shape == (1, 7)


def test_its_inputs_are_the_committed_fixtures(
    script: ModuleType, data_root: Path, repo: ModelRepository
) -> None:
    """Built with the default detector from the repository: the same random tensors and
    FER2013 files as the committed fixture, and a face in each sample photo."""
    inputs = script.build_inputs(data_root, detectors.create_detector(None, repo.root))
    with np.load(FIXTURE) as committed:
        assert np.array_equal(inputs.random_inputs, committed["random_inputs"])
        assert inputs.fer_files == [str(f) for f in committed["fer_files"]]
        assert inputs.media_files == [str(f) for f in committed["media_files"]]
    assert len(inputs.all) == len(inputs.random_inputs) + 28 + len(inputs.media_files)
