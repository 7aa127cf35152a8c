"""The converted ONNX model against the original Keras model (outputs in a fixture).

The fixture was produced by real Keras (scripts/keras_reference.py, TensorFlow in a
throwaway venv) from the same pinned wheel; parity means max |difference| <= 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.models.preprocess import crop, prepare
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier
from emostream.stream.media import read_image
from emostream.training import fer2013
from emostream.training.fer_import import NAME, VERSION

FIXTURES = Path(__file__).parent / "fixtures"

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def classifier(repo: ModelRepository) -> Classifier:
    """The version converted from the Keras weights (not production, which we trained)."""
    return Classifier.from_repository(repo, NAME, VERSION)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "fer_keras_reference.npz") as f:
        return {k: f[k] for k in f.files}


def test_parity_on_synthetic_inputs(
    classifier: Classifier, reference: dict[str, np.ndarray]
) -> None:
    ours = classifier.predict_tensor(reference["random_inputs"])
    assert np.abs(ours - reference["random_keras"]).max() <= TOLERANCE


def test_parity_on_real_fer2013_faces(
    classifier: Classifier, reference: dict[str, np.ndarray], data_root: Path
) -> None:
    files = [str(f) for f in reference["fer_files"]]
    assert len(files) == 28
    batch = prepare([fer2013.load_gray(data_root / f) for f in files], classifier.spec)
    diff = np.abs(classifier.predict_tensor(batch) - reference["fer_keras"])
    assert diff.max() <= TOLERANCE, f"max diff {diff.max():.2e}"


def test_parity_on_detected_faces_in_photos(
    classifier: Classifier, reference: dict[str, np.ndarray], data_root: Path
) -> None:
    crops = []
    for f, box in zip(reference["media_files"], reference["media_boxes"], strict=True):
        image = read_image(data_root / str(f))
        crops.append(crop(image, tuple(int(v) for v in box), classifier.spec.crop_margin))  # type: ignore[arg-type]
    ours = classifier.predict_tensor(prepare(crops, classifier.spec))
    assert np.abs(ours - reference["media_keras"]).max() <= TOLERANCE
    # and the top class agrees, which is what a user sees
    assert (ours.argmax(1) == reference["media_keras"].argmax(1)).all()
