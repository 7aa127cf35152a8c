"""Produce tests/fixtures/blazeface_tflite_reference.npz: the TFLite interpreter's outputs.

Run once when the fixture must change::

    .venv/bin/python scripts/blazeface_reference.py

For each BlazeFace variant in the pinned mediapipe wheel, inputs are prepared here by
emostream's own letterbox (so the test can rebuild them exactly from the file names) plus
seeded random tensors; the original ``.tflite`` is then run by TensorFlow Lite's own
interpreter inside the throwaway venv with TensorFlow (``<cache>/fer-venv``), never
installed in the product. To keep the fixture small it stores, per variant, all anchors'
outputs for a fixed subset of anchors (the best-scoring ones of every input plus an even
spread), their indices, the random seed and the media file names: no image data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from emostream.models.detectors.letterbox import letterbox
from emostream.paths import cache_dir, data_root
from emostream.stream.media import read_image
from emostream.training.blazeface_import import MP_VERSION, VARIANTS, fetch_wheel, read_tflite

FIXTURE = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "blazeface_tflite_reference.npz"
)
MEDIA = ["justin.jpg", "obama.jpg", "two_people.jpg", "no-faces.jpg"]
SEED = 20261123
N_RANDOM = 2
TOP_PER_INPUT = 8
SPREAD = 64

TFLITE_SCRIPT = """
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
interp = tf.lite.Interpreter(model_path=sys.argv[1])
interp.allocate_tensors()
inp = interp.get_input_details()[0]
outs = {d["name"]: d["index"] for d in interp.get_output_details()}
order = sorted(outs, key=lambda n: interp.get_tensor(outs[n]).shape[-1], reverse=True)
x = np.load(sys.argv[2]).transpose(0, 2, 3, 1)  # our NCHW -> TFLite NHWC
reg, cls = [], []
for i in range(len(x)):
    interp.set_tensor(inp["index"], x[i:i + 1])
    interp.invoke()
    reg.append(interp.get_tensor(outs[order[0]])[0])
    cls.append(interp.get_tensor(outs[order[1]])[0])
np.save(sys.argv[3], np.stack(reg).astype(np.float32))
np.save(sys.argv[4], np.stack(cls).astype(np.float32))
print(json.dumps({"tensorflow": tf.__version__}))
"""


def random_inputs(size: int, seed: int = SEED, n: int = N_RANDOM) -> np.ndarray:
    rng = np.random.default_rng(seed + size)
    return rng.uniform(-1, 1, size=(n, 3, size, size)).astype(np.float32)


def media_inputs(root: Path, size: int, names: list[str]) -> np.ndarray:
    return np.concatenate([letterbox(read_image(root / "media" / n), size)[0] for n in names])


def main() -> None:
    root = data_root()
    if root is None:
        sys.exit("the shared data is needed to build the fixture (set EMOSTREAM_DATA)")
    venv_python = cache_dir() / "fer-venv" / "bin" / "python"
    if not venv_python.exists():
        sys.exit(f"{venv_python} missing: run `emostream bench face` once to create it")
    wheel = fetch_wheel()
    arrays: dict[str, Any] = {}
    versions: dict[str, str] = {}
    for variant, v in VARIANTS.items():
        size = v.spec.input_size
        x = np.concatenate([random_inputs(size), media_inputs(root, size, MEDIA)])
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "model.tflite").write_bytes(read_tflite(wheel, variant))
            np.save(t / "x.npy", x)
            (t / "run.py").write_text(TFLITE_SCRIPT)
            proc = subprocess.run(
                [str(venv_python), str(t / "run.py"), str(t / "model.tflite"), str(t / "x.npy"),
                 str(t / "reg.npy"), str(t / "cls.npy")],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            versions.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            reg, cls = np.load(t / "reg.npy"), np.load(t / "cls.npy")
        n_anchors = reg.shape[1]
        top = np.argsort(-cls[..., 0], axis=1)[:, :TOP_PER_INPUT].ravel()
        spread = np.linspace(0, n_anchors - 1, SPREAD).round().astype(np.int64)
        idx = np.unique(np.concatenate([top, spread]))
        arrays[f"{variant}_anchor_index"] = idx
        arrays[f"{variant}_regressors"] = reg[:, idx]
        arrays[f"{variant}_classificators"] = cls[:, idx]
        arrays[f"{variant}_max_logit"] = cls[..., 0].max(axis=1)
        print(f"{variant}: {len(x)} inputs, {len(idx)} of {n_anchors} anchors kept")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        FIXTURE,
        seed=np.array(SEED),
        n_random=np.array(N_RANDOM),
        media_files=np.array([f"media/{n}" for n in MEDIA]),
        meta=np.array(
            json.dumps(
                {
                    **versions,
                    "mediapipe": MP_VERSION,
                    "made": datetime.now(UTC).isoformat(),
                    "by": "scripts/blazeface_reference.py",
                }
            )
        ),
        **arrays,
    )
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes), {versions}")


if __name__ == "__main__":
    main()
