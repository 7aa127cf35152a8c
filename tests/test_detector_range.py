"""Issue 15: BlazeFace's ``range`` (near, far, auto), the tiles of far and their merge.

Real models from ``EMOSTREAM_MODEL_ROOT`` and real photos from the shared media; the
tiling and merging geometry is also tested alone on synthetic boxes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import typer
from pydantic import ValidationError
from shared_media import media_file

from emostream.cli.analyze import DetectorRange, with_range
from emostream.cli.common import EXIT_USAGE
from emostream.models.detectors import tiles
from emostream.models.detectors.base import Detection
from emostream.models.detectors.plugins.blazeface import BlazeFaceConfig, BlazeFaceDetector, Range
from emostream.models.detectors.plugins.haar import HaarConfig
from emostream.models.detectors.plugins.yunet import YuNetConfig
from emostream.paths import model_root
from emostream.settings import Settings
from emostream.stream.media import read_image

RANGES: tuple[Range, ...] = ("near", "far", "auto")
CROWD_FACES = 96  # six_people_stairs.jpg at 1/4 scale, tiled 4 x 4: faces of ~24 px


def _root() -> Path:
    root = model_root()
    for version in ("1", "2"):
        if not (root / "face-detector" / version / "model.onnx").is_file():
            pytest.skip(f"face-detector/{version} not in {root}: set EMOSTREAM_MODEL_ROOT")
    return root


@pytest.fixture(scope="module")
def detectors() -> dict[str, BlazeFaceDetector]:
    root = _root()
    return {r: BlazeFaceDetector(BlazeFaceConfig(model_root=root, range=r)) for r in RANGES}


def _xyxy(found: list[Detection]) -> np.ndarray:
    b = np.array([d.box for d in found], float).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _worst_overlaps(found: list[Detection]) -> tuple[float, float]:
    """The largest pairwise IoU and intersection-over-smaller-area of the boxes."""
    b = _xyxy(found)
    worst_iou = worst_contain = 0.0
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            iw = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
            ih = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            ai = (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1])
            aj = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            worst_iou = max(worst_iou, inter / (ai + aj - inter))
            worst_contain = max(worst_contain, inter / min(ai, aj))
    return worst_iou, worst_contain


def crowd() -> np.ndarray:
    small = cv2.resize(
        read_image(media_file("six_people_stairs.jpg")),
        None,
        fx=0.25,
        fy=0.25,
        interpolation=cv2.INTER_AREA,
    )
    return np.tile(small, (4, 4, 1))


# -- real photos ----------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.parametrize("name", ["six_people_table.jpg", "six_people_stairs.jpg"])
def test_far_finds_all_six(detectors: dict[str, BlazeFaceDetector], name: str) -> None:
    image = read_image(media_file(name))
    found = detectors["far"].detect(image)
    assert len(found) == 6, found
    assert _worst_overlaps(found)[1] < tiles.CONTAIN


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "want"), [("six_people_table.jpg", 5), ("six_people_stairs.jpg", 6)]
)
def test_auto_and_near_on_six_people(
    detectors: dict[str, BlazeFaceDetector], name: str, want: int
) -> None:
    """Measured: auto (both models, whole frame) misses one small face at the table; near
    alone (the old default) finds none, which is issue 15."""
    image = read_image(media_file(name))
    assert len(detectors["auto"].detect(image)) == want
    assert detectors["near"].detect(image) == []


@pytest.mark.data
@pytest.mark.parametrize("range_", RANGES)
@pytest.mark.parametrize(("name", "want"), [("two_people.jpg", 2), ("no-faces.jpg", 0)])
def test_every_range_on_two_and_no_faces(
    detectors: dict[str, BlazeFaceDetector], range_: str, name: str, want: int
) -> None:
    image = read_image(media_file(name))
    found = detectors[range_].detect(image)
    assert len(found) == want, found
    h, w = image.shape[:2]
    b = _xyxy(found)
    assert np.all(b[:, :2] >= 0) and np.all(b[:, 2] <= w) and np.all(b[:, 3] <= h)


@pytest.mark.data
def test_far_finds_most_of_a_crowd_without_duplicates(
    detectors: dict[str, BlazeFaceDetector],
) -> None:
    image = crowd()
    assert image.shape[:2] == (632, 1200)
    found = detectors["far"].detect(image)
    assert len(found) >= 0.75 * CROWD_FACES, len(found)  # measured 83
    assert len(found) <= CROWD_FACES
    worst_iou, worst_contain = _worst_overlaps(found)
    assert worst_iou < 0.3 and worst_contain < tiles.CONTAIN
    assert detectors["auto"].detect(image) == []  # 24 px faces are too small whole-frame


@pytest.mark.data
def test_detect_batch_is_detect_of_each(detectors: dict[str, BlazeFaceDetector]) -> None:
    """Frames of several sizes, tiles of all of them in one model call per model."""
    names = ("six_people_table.jpg", "two_people.jpg", "no-faces.jpg", "six_people_stairs.jpg")
    frames = [read_image(media_file(n)) for n in names]
    for range_, det in detectors.items():
        batched = det.detect_batch(frames)
        for frame, got in zip(frames, batched, strict=True):
            want = det.detect(frame)
            assert len(got) == len(want), range_
            np.testing.assert_allclose(_xyxy(got), _xyxy(want), atol=1)


@pytest.mark.data
def test_a_model_with_a_fixed_batch_of_one_runs_image_by_image(
    detectors: dict[str, BlazeFaceDetector],
) -> None:
    """Older imports had batch 1 fixed: same faces, one run per tile."""
    proto = onnx.load(str(_root() / "face-detector" / "2" / "model.onnx"))
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    config = BlazeFaceConfig(range="far")
    fixed = BlazeFaceDetector(config, model=proto.SerializeToString())
    ((model, _),) = fixed.passes
    assert not model.batched and detectors["far"].passes[0][0].batched
    fixed.passes = [(model, True)]  # the explicit model is whole-frame only: tile it too
    frames = [
        read_image(media_file("six_people_stairs.jpg")),
        read_image(media_file("two_people.jpg")),
    ]
    for got, want in zip(
        fixed.detect_batch(frames), detectors["far"].detect_batch(frames), strict=True
    ):
        np.testing.assert_allclose(_xyxy(got), _xyxy(want), atol=1)


# -- config ---------------------------------------------------------------------------------
def test_each_range_loads_only_its_models(detectors: dict[str, BlazeFaceDetector]) -> None:
    shape = {r: [(m.spec.variant, tiled) for m, tiled in d.passes] for r, d in detectors.items()}
    assert shape == {
        "near": [("short", False)],
        "far": [("full", True)],
        "auto": [("short", False), ("full", False)],
    }
    assert detectors["auto"].ref == "face-detector/1+2 (auto)"
    assert detectors["far"].ref == "face-detector/2 (far)"
    assert detectors["far"].tile == 320
    assert BlazeFaceConfig().range == "near"  # live default: the cheapest (docs/BENCHMARKS.md)


def test_a_model_of_the_wrong_variant_is_refused() -> None:
    root = _root()
    with pytest.raises(ValueError, match=r"detector.version '2' .* full-range model; range near"):
        BlazeFaceDetector(BlazeFaceConfig(model_root=root, range="near", version="2"))
    with pytest.raises(ValueError, match=r"detector.far_version '1' .* short-range model"):
        BlazeFaceDetector(BlazeFaceConfig(model_root=root, range="auto", far_version="1"))


def test_range_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        BlazeFaceConfig(range="wide")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BlazeFaceConfig(min_face_px=2)
    monkeypatch.setenv("EMOSTREAM_DETECTOR__TYPE", "blazeface")
    monkeypatch.setenv("EMOSTREAM_DETECTOR__RANGE", "far")
    monkeypatch.setenv("EMOSTREAM_DETECTOR__MIN_FACE_PX", "24")
    detector = Settings().detector
    assert isinstance(detector, BlazeFaceConfig)
    assert (detector.range, detector.min_face_px) == ("far", 24)


def test_analyze_defaults_to_far(monkeypatch: pytest.MonkeyPatch) -> None:
    def range_of(s: Settings) -> str:
        assert isinstance(s.detector, YuNetConfig | BlazeFaceConfig)
        return s.detector.range

    monkeypatch.delenv("EMOSTREAM_DETECTOR__RANGE", raising=False)
    assert range_of(with_range(Settings(), None)) == "far"
    assert range_of(with_range(Settings(), DetectorRange.near)) == "near"
    monkeypatch.setenv("EMOSTREAM_DETECTOR__RANGE", "auto")  # the environment beats far
    assert range_of(with_range(Settings(), None)) == "auto"
    assert range_of(with_range(Settings(), DetectorRange.far)) == "far"  # the flag beats both
    haar = Settings(detector=HaarConfig())
    assert with_range(haar, None).detector is haar.detector
    with pytest.raises(typer.Exit) as exited:
        with_range(haar, DetectorRange.far)
    assert exited.value.exit_code == EXIT_USAGE


# -- tiles and merge, on synthetic boxes -----------------------------------------------------
def test_tiles_cover_the_frame_with_overlap() -> None:
    assert tiles.tile_layout(320, 240, 320) == []  # fits: the whole-frame pass is enough
    assert tiles.spans(200, 320) == [(0, 200)]
    layout = tiles.tile_layout(1200, 632, 320, 0.25)
    xs = sorted({r.x for r in layout})
    ys = sorted({r.y for r in layout})
    assert xs[0] == 0 and xs[-1] + 320 == 1200 and ys[0] == 0 and ys[-1] + 320 == 632
    assert all(b - a <= 0.75 * 320 for a, b in itertools.pairwise(xs))
    assert all(b - a <= 0.75 * 320 for a, b in itertools.pairwise(ys))
    assert len(layout) == len(xs) * len(ys) == 5 * 3
    wide = tiles.tile_layout(1000, 200, 320)  # one row of tiles as tall as the frame
    assert {(r.y, r.h) for r in wide} == {(0, 200)} and all(r.w == 320 for r in wide)
    frame = np.arange(20 * 30).reshape(20, 30)
    view = tiles.Region(5, 2, 10, 4).view(frame)
    assert view.shape == (4, 10) and view[0, 0] == frame[2, 5] and view.base is not None


def test_a_box_at_an_inner_tile_border_is_cut() -> None:
    region = tiles.Region(240, 0, 320, 320)  # frame 800 x 320: its left and right are inner
    boxes = np.array(
        [
            [239.0, 50, 270, 80],  # reaches past the left border
            [300.0, 50, 330, 80],  # inside
            [530.0, 0, 559, 30],  # at the right border (within the margin) and the frame top
            [300.0, 290, 330, 320],  # at the bottom, which is the frame's own edge
        ]
    )
    assert tiles.cut_by(boxes, region, 800, 320).tolist() == [True, False, True, False]


def test_merge_keeps_one_box_per_face() -> None:
    boxes = np.array(
        [
            [100.0, 100, 124, 124],  # a face seen by the whole frame
            [101.0, 99, 125, 123],  # the same face from a tile: IoU ~0.85
            [100.0, 100, 112, 124],  # the same face cut by a tile border: half, higher score
            [130.0, 100, 154, 124],  # the next face, 6 px away: kept
            [300.0, 300, 340, 340],  # a big box around a small one inside it
            [310.0, 310, 330, 330],
        ]
    )
    scores = np.array([0.8, 0.9, 0.95, 0.7, 0.9, 0.8])
    cut = np.array([False, False, True, False, False, False])
    keep = tiles.merge(boxes, scores, cut)
    assert keep.tolist() == [1, 4, 3]  # whole boxes first by score; the cut one ranks last
    # without the cut flag the half box (best score) wins and its whole face is dropped
    assert tiles.merge(boxes, scores).tolist() == [2, 4, 3]
    assert tiles.merge(boxes[:0], scores[:0]).tolist() == []
    # nothing overlaps: everything is kept, best first
    apart = np.array([[0.0, 0, 10, 10], [20.0, 0, 30, 10], [40.0, 0, 50, 10]])
    assert tiles.merge(apart, np.array([0.6, 0.9, 0.7])).tolist() == [1, 2, 0]


def test_merge_keeps_the_first_pass_framing_whatever_the_scores() -> None:
    """auto: where near (rank 0) and far (rank 1) see the same face, near's box stays,
    so the framing the emotion model gets does not flip with the scores."""
    boxes = np.array([[100.0, 100, 224, 224], [110.0, 112, 220, 222], [400.0, 50, 440, 90]])
    scores = np.array([0.7, 0.95, 0.8])
    rank = np.array([0, 1, 1])
    assert tiles.merge(boxes, scores, None, rank).tolist() == [0, 2]
    assert tiles.merge(boxes, scores).tolist() == [1, 2]  # by score alone far's would win
