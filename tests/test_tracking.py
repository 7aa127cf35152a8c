"""Detect less, track more: optical flow between detections, and when the detector runs.

Real frames of the shared clips; the agreement test runs the production analyzer both ways.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from shared_media import media_file

from emostream import metrics
from emostream.models.face import FaceAnalyzer
from emostream.models.face_tracking.flow import follow
from emostream.models.face_tracking.ids import iou
from emostream.models.face_tracking.schedule import FaceTracks, Plan, TrackingConfig, Why, rounds
from emostream.models.repository import ModelRepository
from emostream.pipeline.jobs import Box, FrameInfo, Job
from emostream.pipeline.outcomes import Scored
from emostream.settings import Settings


@cache
def _frames(name: str, count: int) -> tuple[np.ndarray, ...]:
    with av.open(str(media_file(name))) as container:
        frames = container.decode(video=0)
        return tuple(f.to_ndarray(format="bgr24") for f in itertools.islice(frames, count))


def frames(name: str = "woman2.mp4", count: int = 60) -> tuple[np.ndarray, ...]:
    return _frames(name, count)


def job(image: np.ndarray, seq: int, session: str = "s") -> Job:
    return Job(session, seq, None, image, FrameInfo(image.shape[1], image.shape[0]))


def face_box(analyzer: FaceAnalyzer, image: np.ndarray) -> Box:
    (box,) = analyzer.detect(image)
    return box


# -- optical flow -----------------------------------------------------------------------
def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


@pytest.mark.data
def test_flow_follows_a_shifted_face(analyzer: FaceAnalyzer) -> None:
    image = frames()[0]
    box = face_box(analyzer, image)
    shifted = cv2.warpAffine(image, np.float32([[1, 0, 9], [0, 1, -5]]), image.shape[1::-1])
    (moved,) = follow(_gray(image), _gray(shifted), [box])
    assert moved.quality > 0.8
    assert abs(moved.box[0] - (box[0] + 9)) <= 1 and abs(moved.box[1] - (box[1] - 5)) <= 1
    assert abs(moved.box[2] - box[2]) <= 2


@pytest.mark.data
def test_flow_follows_a_face_that_grows(analyzer: FaceAnalyzer) -> None:
    image = frames()[0]
    box = face_box(analyzer, image)
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    m = cv2.getRotationMatrix2D((cx, cy), 0.0, 1.1)  # 10 % closer, about the face centre
    (moved,) = follow(_gray(image), _gray(cv2.warpAffine(image, m, image.shape[1::-1])), [box])
    assert moved.quality > 0.6
    assert 1.05 < moved.box[2] / box[2] < 1.15


@pytest.mark.data
def test_flow_loses_a_face_that_is_covered(analyzer: FaceAnalyzer) -> None:
    image = frames()[0]
    box = face_box(analyzer, image)
    covered = image.copy()
    x, y, w, h = box
    covered[y : y + h, x : x + w] = np.random.default_rng(0).integers(0, 255, (h, w, 3))
    (lost,) = follow(_gray(image), _gray(covered), [box])
    assert lost.quality < 0.3


def test_flow_of_a_flat_box_has_nothing_to_follow() -> None:
    flat = np.full((120, 160), 128, np.uint8)
    assert follow(flat, flat, [(10, 10, 60, 60)])[0].quality == 0.0
    assert follow(flat, flat, []) == []
    with pytest.raises(ValueError, match="differ in size"):
        follow(flat, flat[:60], [(10, 10, 20, 20)])


@pytest.mark.data
def test_flow_follows_the_real_clip_between_detections(analyzer: FaceAnalyzer) -> None:
    clip = frames(count=40)
    box = face_box(analyzer, clip[0])
    for prev, cur in itertools.pairwise(clip):
        (followed,) = follow(_gray(prev), _gray(cur), [box])
        box = followed.box
    assert iou(box, face_box(analyzer, clip[-1])) > 0.6  # 39 frames without the detector


# -- the schedule -------------------------------------------------------------------------
def plan_after_detection(tracks: FaceTracks, analyzer: FaceAnalyzer, image: np.ndarray) -> Plan:
    first = tracks.plan(job(image, 1))
    assert first.why is Why.start
    tracks.detected(job(image, 1), first, analyzer.detect(image))
    return first


@pytest.mark.data
def test_schedule_follows_then_detects_every_n(analyzer: FaceAnalyzer) -> None:
    clip = frames()
    tracks = FaceTracks(TrackingConfig(detect_every=4))
    plan_after_detection(tracks, analyzer, clip[0])
    whys = [tracks.plan(job(clip[k], k + 1)).why for k in (1, 2, 3, 4)]
    assert whys == [None, None, None, Why.schedule]  # one detector run per 4 frames


@pytest.mark.data
def test_gaps_and_order_and_size_need_the_detector(analyzer: FaceAnalyzer) -> None:
    clip = frames()
    tracks = FaceTracks(TrackingConfig(max_gap=3))  # not the default: the test names it
    plan_after_detection(tracks, analyzer, clip[0])
    assert tracks.plan(job(clip[5], 6)).why is Why.gap  # frames 2..5 went elsewhere
    assert tracks.plan(job(clip[1], 1)).why is Why.gap  # a frame it already saw
    small = cv2.resize(clip[1], (300, 168))
    assert tracks.plan(job(small, 2)).why is Why.gap
    assert tracks.plan(job(clip[1], 2)).boxes is not None


@pytest.mark.data
def test_jobs_without_a_session_and_detect_every_one_are_stateless(
    analyzer: FaceAnalyzer,
) -> None:
    image = frames()[0]
    assert FaceTracks().plan(job(image, 1, session="")).why is Why.stateless
    assert FaceTracks(TrackingConfig(detect_every=1)).plan(job(image, 1)).why is Why.stateless
    tracks = FaceTracks()
    tracks.detected(job(image, 1, session=""), tracks.plan(job(image, 1, "")), [(0, 0, 9, 9)])
    assert len(tracks) == 0


@pytest.mark.data
def test_a_change_outside_the_boxes_looks_for_a_new_face(analyzer: FaceAnalyzer) -> None:
    clip = frames()
    tracks = FaceTracks()
    plan_after_detection(tracks, analyzer, clip[0])
    entered = clip[1].copy()
    entered[:, :120] = 255  # someone walks in at the left edge, far from the face
    assert tracks.plan(job(entered, 2)).why is Why.scene


@pytest.mark.data
def test_a_covered_face_is_uncertain(analyzer: FaceAnalyzer) -> None:
    clip = frames()
    tracks = FaceTracks(TrackingConfig(scene_change=0))
    plan_after_detection(tracks, analyzer, clip[0])
    x, y, w, h = face_box(analyzer, clip[0])
    covered = clip[1].copy()
    covered[y : y + h, x : x + w] = 0
    assert tracks.plan(job(covered, 2)).why is Why.uncertain


@pytest.mark.data
def test_state_is_bounded_and_expires(
    analyzer: FaceAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = frames()[0]
    tracks = FaceTracks(TrackingConfig(max_sessions=3, idle_s=5))
    for k in range(5):
        j = job(image, 1, session=f"s{k}")
        tracks.detected(j, tracks.plan(j), [])
    assert len(tracks) == 3
    assert tracks.plan(job(image, 2, session="s0")).why is Why.start  # first out
    clock = [time.monotonic() + 1000.0]  # after every state the real clock stamped
    monkeypatch.setattr("emostream.models.face_tracking.schedule.time.monotonic", lambda: clock[0])
    j = job(image, 1, session="new")
    tracks.detected(j, tracks.plan(j), [])
    clock[0] += 6
    j = job(image, 1, session="later")
    tracks.detected(j, tracks.plan(j), [])
    assert len(tracks) == 1
    tracks.forget("later")
    assert len(tracks) == 0


def test_rounds_put_a_sessions_frames_in_seq_order() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    items = [(0, job(image, 3, "a")), (1, job(image, 2, "a")), (2, job(image, 7, "b"))]
    items += [(3, job(image, 1, "")), (4, job(image, 1, ""))]
    out = [[(i, j.session, j.seq) for i, j in r] for r in rounds(items)]
    assert out == [[(3, "", 1), (4, "", 1), (1, "a", 2), (2, "b", 7)], [(0, "a", 3)]]


# -- the analyzer, both ways ----------------------------------------------------------------
def analyzer_with(repo: ModelRepository, detect_every: int) -> FaceAnalyzer:
    settings = Settings(model_root=repo.root, tracking={"detect_every": detect_every})
    return FaceAnalyzer.from_settings(settings)


def labelled(analyzer: FaceAnalyzer, clip: tuple[np.ndarray, ...]) -> Iterator[list[tuple]]:
    """Each frame's faces as (box, top class), one batch of two frames at a time."""
    for k in range(0, len(clip) - 1, 2):
        batch = [job(clip[k], k + 1, "clip"), job(clip[k + 1], k + 2, "clip")]
        for outcome in analyzer.run(batch):
            assert isinstance(outcome, Scored)
            faces = outcome.result
            yield [
                (box, faces.classes[int(np.argmax(s))])
                for box, s in zip(faces.boxes, faces.scores, strict=True)
            ]


#: The model is sensitive to framing: moving the detector's own box by 1 px (YuNet, its
#: square crop) changes 4.8 % of woman2.mp4's labels and 8.5 % of test.mp4's (hand-held,
#: its faces ambiguous; measured on these 150 frames, 2026-12-06), so no tracker can agree
#: on more than about 95 % and 91 % of them; 142 of 150 agreed on woman2.
AGREEMENT = {"woman2.mp4": 0.93, "test.mp4": 0.85}


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(AGREEMENT))
def test_scheduled_detection_gives_the_labels_of_detecting_every_frame(
    repo: ModelRepository, name: str
) -> None:
    clip = frames(name, count=150)
    every = list(labelled(analyzer_with(repo, 1), clip))
    followed_before = metrics.FACE_FRAMES.labels("followed")._value.get()
    scheduled = list(labelled(analyzer_with(repo, 5), clip))
    followed = metrics.FACE_FRAMES.labels("followed")._value.get() - followed_before
    assert followed >= len(clip) // 2  # the detector really ran on few frames
    faces = agree = 0
    for a, b in zip(every, scheduled, strict=True):
        for box, label in a:
            faces += 1
            match = [lb for bb, lb in b if iou(box, bb) > 0.5]
            agree += bool(match) and match[0] == label
    assert faces >= len(clip) * 0.9
    assert agree / faces >= AGREEMENT[name], f"{agree}/{faces} faces agree"


def test_flow_does_not_invent_faces_in_an_empty_scene(repo: ModelRepository, media: Path) -> None:
    empty = cv2.resize(cv2.imread(str(media / "no-faces.jpg")), (640, 480))
    analyzer = analyzer_with(repo, 5)
    for seq in range(1, 8):
        (outcome,) = analyzer.run([job(empty, seq, "empty")])
        assert isinstance(outcome, Scored) and outcome.result.boxes == []
