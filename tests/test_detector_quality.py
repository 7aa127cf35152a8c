"""The default detectors on the hand-labelled boxes (bench/face_boxes): a regression test.

The figures docs/ARCHITECTURE.md's table gives for the defaults, with margins: a change of
model, threshold, working size or merging that loses faces or adds false ones fails here.
Not a timing test: speed is `emostream bench detectors`'s business.

Measured (37 images, 155 faces, the shared data present): the still-image cascade (YuNet
far, then RetinaFace) finds 94.0 % of the faces at least 20 px wide with 0.054 false
positives per image; YuNet far alone (video frames) 88.6 % and 0.054; YuNet near (live)
82 % of the faces over 96 px, 0.027 false positives per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.bench import box_metrics as bm
from emostream.bench.boxset import LabelledImage, load_set
from emostream.models.detectors import create_detector, default_detector
from emostream.models.detectors.base import FaceDetector
from emostream.models.detectors.cascade import PhotoConfig
from emostream.models.face import stills_for
from emostream.models.repository import ModelRepository

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def labelled(data_root: Path) -> list[LabelledImage]:
    return load_set(data_root)


def _far(repo: ModelRepository) -> FaceDetector:
    far = default_detector().model_copy(update={"range": "far"})
    return create_detector(far, repo.root)


def _score(det: FaceDetector, images: list[LabelledImage]) -> bm.SetScore:
    return bm.score_set([im.match(det.detect(im.image())) for im in images], -np.inf)


def test_photos_meet_the_offline_goal(repo: ModelRepository, labelled: list[LabelledImage]) -> None:
    """At least 90 % of the faces >= 20 px, at most one false positive per ten images."""
    far = default_detector().model_copy(update={"range": "far"})
    stills = stills_for(far, PhotoConfig(), repo.root)
    assert stills is not None
    s = _score(stills.current, labelled)
    assert s.recall_goal >= 0.90
    assert s.false_per_image <= 0.10
    assert s.recall_by_size[1] >= 0.90 and s.recall_by_size[2] >= 0.90


def test_video_frames_lose_little_without_the_second_pass(
    repo: ModelRepository, labelled: list[LabelledImage]
) -> None:
    s = _score(_far(repo), labelled)
    assert s.recall_goal >= 0.85
    assert s.false_per_image <= 0.10


def test_the_live_detector_finds_close_faces_and_little_else(
    repo: ModelRepository, labelled: list[LabelledImage]
) -> None:
    s = _score(create_detector(default_detector(), repo.root), labelled)
    assert s.recall_by_size[2] >= 0.75  # faces over 96 px: a webcam's
    assert s.false_per_image <= 0.08
    assert s.precision >= 0.95


def test_images_without_faces_give_none(
    repo: ModelRepository, labelled: list[LabelledImage]
) -> None:
    """The negatives (a cat, a temple, coffee, a mask, a meadow, cartoon creatures): no
    face from any default, the cascade included."""
    far = default_detector().model_copy(update={"range": "far"})
    stills = stills_for(far, PhotoConfig(), repo.root)
    assert stills is not None
    live = create_detector(default_detector(), repo.root)
    negatives = [im for im in labelled if not im.faces]
    assert len(negatives) >= 5
    for im in negatives:
        for det in (live, _far(repo), stills.current):
            assert det.detect(im.image()) == [], (im.name, det.ref)
