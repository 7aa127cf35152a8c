"""Detection and classification on real faces (shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.models.detectors.plugins.haar import HaarConfig, HaarDetector
from emostream.models.face import FaceAnalyzer
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, RunnerConfig, choose_providers
from emostream.paths import data_root
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.messages import face_message
from emostream.pipeline.outcomes import Scored
from emostream.stream.media import read_image
from emostream.training.evaluate import evaluate_fer2013


@pytest.mark.parametrize(
    ("name", "faces"),
    [("justin.jpg", 1), ("obama.jpg", 1), ("two_people.jpg", 2), ("no-faces.jpg", 0)],
)
def test_detector_counts_faces(media: Path, name: str, faces: int) -> None:
    assert len(HaarDetector().detect(read_image(media / name))) == faces


def test_detector_boxes_are_in_source_pixels(media: Path) -> None:
    image = read_image(media / "obama.jpg")  # 910x1137, detected on a 320 px copy
    (det,) = HaarDetector().detect(image)
    x, y, w, h = det.box
    assert x >= 0 and y >= 0 and x + w <= image.shape[1] and y + h <= image.shape[0]
    assert w > 150  # a portrait: the face is large in source pixels


def test_full_size_detection_config(media: Path) -> None:
    full = HaarDetector(HaarConfig(max_side=0, scale_factor=1.1))
    assert len(full.detect(read_image(media / "justin.jpg"))) == 1


def test_analyzer_scores_a_real_face(analyzer: FaceAnalyzer, media: Path) -> None:
    image = read_image(media / "justin.jpg")
    job = Job("", 0, None, image, FrameInfo(image.shape[1], image.shape[0]))
    (outcome,) = run_batch(analyzer, [job])
    assert isinstance(outcome, Scored)
    (face,) = face_message(outcome, latency_s=0.0, unsure_below=0.5).faces
    assert set(face.scores) == set(analyzer.card.classes)
    assert abs(sum(face.scores.values()) - 1) < 1e-3
    assert face.label == "happy"  # justin.jpg is a broad smile


def test_batch_results_equal_single_results(classifier: Classifier, data_root: Path) -> None:
    files = sorted((data_root / "fer2013" / "val" / "happy").glob("*.jpg"))[:8]
    import cv2

    crops = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    batched = classifier.predict(crops)
    single = np.concatenate([classifier.predict([c]) for c in crops])
    assert np.abs(batched - single).max() < 1e-5


def test_auto_providers_fall_back_to_cpu() -> None:
    assert choose_providers(RunnerConfig())[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="not available"):
        choose_providers(RunnerConfig(providers=["NoSuchExecutionProvider"]))


@pytest.mark.slow
@pytest.mark.parametrize(("version", "floor"), [("1", 0.64), ("2", 0.69), ("3", 0.69)])
def test_fer2013_val_accuracy(
    repo: ModelRepository, data_root: Path, version: str, floor: float
) -> None:
    """Through the serving path (JPEG, card preprocessing, ONNX Runtime): the imported
    mini-Xception (published: about 0.66), the version we trained and its int8 copy, each
    matching the figure its card records (for version 2, measured in PyTorch by `train
    evaluate`; for version 3, in ONNX Runtime by `train face-quantize`)."""
    if version not in repo.versions("face-emotion"):
        pytest.skip(f"face-emotion/{version} is not in {repo.root}")
    classifier = Classifier.from_repository(repo, "face-emotion", version)
    report = evaluate_fer2013(classifier, data_root, "val", progress=False)
    assert report.samples == 3589
    assert report.accuracy >= floor, f"accuracy {report.accuracy:.4f}"
    card = classifier.card
    if card.evaluation:  # the card's figure is this same measurement
        assert abs(card.evaluation[0].accuracy - report.accuracy) < 1e-3


def test_data_root_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    monkeypatch.setenv("EMOSTREAM_DATA", str(tmp_path / "absent"))
    assert data_root() is None
