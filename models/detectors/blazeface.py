"""BlazeFace (MediaPipe face detection), converted to ONNX and run on ONNX Runtime.

The weights come from the pinned ``mediapipe`` wheel on PyPI (Apache-2.0), converted by
``emostream.training.tflite_onnx`` and registered as ``face-detector/<version>`` by
``emostream.training.blazeface_import``. Two variants exist: the short-range model (128x128,
faces within about 2 m of a webcam) and the full-range model (192x192, smaller and more
distant faces). Everything that differs between them (input size, SSD anchors, decoding
scales, default score threshold) is stored as JSON in the ONNX file's metadata under
``emostream.blazeface`` (so it is covered by the card's sha256) and read here: a new version
is a new folder, not a code change.

Pipeline, as MediaPipe's ``face_detection.pbtxt`` does it: letterbox the RGB frame into the
square input (aspect kept, zero borders), scale pixels to [-1, 1]; run the model; decode
``regressors`` (per anchor: x, y, w, h offsets, then 6 keypoints) against SSD anchors;
``sigmoid`` the clipped ``classificators``; keep scores above the threshold; weighted NMS at
IoU 0.3 (MediaPipe's ``WEIGHTED`` algorithm: overlapping boxes are averaged by score); undo
the letterbox to get source-frame pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, Field

from emostream.fields import OptionalCommaList
from emostream.models.detectors.base import Detection, DetectorConfigBase, FaceDetector
from emostream.models.repository import ModelRepository
from emostream.models.runner import OnnxRunner, RunnerConfig

METADATA_KEY = "emostream.blazeface"
MODEL_NAME = "face-detector"


class SsdAnchorOptions(BaseModel):
    """MediaPipe's ``SsdAnchorsCalculatorOptions`` (the fields BlazeFace uses)."""

    input_size_height: int
    input_size_width: int
    num_layers: int
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    strides: list[int]
    aspect_ratios: list[float] = Field(default_factory=lambda: [1.0])
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False
    fixed_anchor_size: bool = True


class BlazeFaceSpec(BaseModel):
    """How to feed and decode one BlazeFace model (stored in the ONNX metadata)."""

    variant: Literal["short", "full"]
    input_size: int
    anchors: SsdAnchorOptions
    num_coords: int = 16
    num_keypoints: int = 6
    box_scale: float = Field(description="x/y/w/h scale of the raw offsets (the input size)")
    score_clipping: float = 100.0
    min_score: float = Field(description="MediaPipe's min_score_thresh for this model")
    nms_iou: float = 0.3


#: MediaPipe's options for the two models (face_detection_short_range.pbtxt,
#: face_detection_full_range.pbtxt and face_detection.pbtxt of mediapipe 0.10.x).
SHORT_RANGE = BlazeFaceSpec(
    variant="short",
    input_size=128,
    anchors=SsdAnchorOptions(
        input_size_height=128, input_size_width=128, num_layers=4, strides=[8, 16, 16, 16]
    ),
    box_scale=128.0,
    min_score=0.5,
)
FULL_RANGE = BlazeFaceSpec(
    variant="full",
    input_size=192,
    anchors=SsdAnchorOptions(
        input_size_height=192,
        input_size_width=192,
        num_layers=1,
        strides=[4],
        interpolated_scale_aspect_ratio=0.0,
    ),
    box_scale=192.0,
    min_score=0.6,
)


def _anchor_scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def generate_anchors(o: SsdAnchorOptions) -> np.ndarray:
    """(K, 4) anchors ``[x_center, y_center, w, h]`` in [0, 1] input coordinates.

    A port of MediaPipe's ``SsdAnchorsCalculator``: consecutive layers with the same stride
    share one feature map, each contributing one anchor per aspect ratio plus one
    interpolated-scale anchor (when ``interpolated_scale_aspect_ratio`` > 0). For the
    short-range model that is 16x16x2 + 8x8x6 = 896 anchors; for the full-range model
    48x48x1 = 2304. BlazeFace uses ``fixed_anchor_size``: every anchor is 1x1, so the
    network's raw w/h offsets are the box size directly.
    """
    if len(o.strides) != o.num_layers:
        raise ValueError(f"{len(o.strides)} strides for {o.num_layers} layers")
    out: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < o.num_layers:
        heights: list[float] = []
        widths: list[float] = []
        last = layer
        while last < o.num_layers and o.strides[last] == o.strides[layer]:
            scale = _anchor_scale(o.min_scale, o.max_scale, last, o.num_layers)
            ratios: list[tuple[float, float]] = []  # (aspect ratio, scale)
            if last == 0 and o.reduce_boxes_in_lowest_layer:
                ratios = [(1.0, 0.1), (2.0, scale), (0.5, scale)]
            else:
                ratios = [(ar, scale) for ar in o.aspect_ratios]
                if o.interpolated_scale_aspect_ratio > 0.0:
                    nxt = (
                        1.0
                        if last == o.num_layers - 1
                        else _anchor_scale(o.min_scale, o.max_scale, last + 1, o.num_layers)
                    )
                    ratios.append((o.interpolated_scale_aspect_ratio, math.sqrt(scale * nxt)))
            for ar, s in ratios:
                heights.append(s / math.sqrt(ar))
                widths.append(s * math.sqrt(ar))
            last += 1
        stride = o.strides[layer]
        fh = math.ceil(o.input_size_height / stride)
        fw = math.ceil(o.input_size_width / stride)
        for y in range(fh):
            for x in range(fw):
                for h, w in zip(heights, widths, strict=True):
                    xc = (x + o.anchor_offset_x) / fw
                    yc = (y + o.anchor_offset_y) / fh
                    if o.fixed_anchor_size:
                        out.append((xc, yc, 1.0, 1.0))
                    else:
                        out.append((xc, yc, w, h))
        layer = last
    return np.asarray(out, dtype=np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[x1, y1, x2, y2]`` box with each row of ``boxes``."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.asarray(np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0))


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, weighted: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Non-maximum suppression over ``[x1, y1, x2, y2]`` boxes; returns (boxes, scores).

    Highest score first; every box overlapping the kept one by more than ``iou_threshold``
    is suppressed. ``weighted`` (MediaPipe's WEIGHTED algorithm) replaces the kept box by
    the score-weighted mean of itself and the boxes it suppresses, which steadies the box
    from frame to frame; the score stays the best one.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    kept_boxes: list[np.ndarray] = []
    kept_scores: list[float] = []
    remaining = np.arange(len(boxes))
    while len(remaining):
        top = remaining[0]
        overlap = iou(boxes[top], boxes[remaining]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        if weighted and len(group) > 1:
            w = scores[group]
            kept_boxes.append((boxes[group] * w[:, None]).sum(axis=0) / w.sum())
        else:
            kept_boxes.append(boxes[top])
        kept_scores.append(float(scores[top]))
        remaining = remaining[~overlap]
    if not kept_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return np.asarray(kept_boxes, np.float32), np.asarray(kept_scores, np.float32)


class BlazeFaceConfig(DetectorConfigBase):
    type: Literal["blazeface"] = "blazeface"
    model: str = Field(default=MODEL_NAME, description="model name in the repository")
    version: str = Field(default="production", description="a version or an alias")
    model_root: Path | None = Field(default=None, description="None: the settings' model root")
    score_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="None: the model's own (0.5 / 0.6)"
    )
    nms_iou: float = Field(default=0.3, gt=0.0, le=1.0)
    nms: Literal["weighted", "hard"] = "weighted"
    min_size: int = Field(default=0, ge=0, description="drop faces narrower than this (px)")
    providers: OptionalCommaList = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="a 128 px model is cheaper on CPU than a GPU round trip; None: auto",
    )
    intra_op_threads: int = Field(
        default=1, ge=0, description="one detector per worker thread; 0: ONNX Runtime decides"
    )


def read_spec(runner: OnnxRunner) -> BlazeFaceSpec:
    meta = runner.session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ValueError(f"ONNX model has no {METADATA_KEY!r} metadata: not a BlazeFace import")
    return BlazeFaceSpec.model_validate_json(meta[METADATA_KEY])


class BlazeFaceDetector(FaceDetector):
    name = "blazeface"
    config_class = BlazeFaceConfig

    def __init__(
        self, config: BlazeFaceConfig | None = None, *, model: Path | bytes | None = None
    ) -> None:
        """From the repository (``config.model``/``config.version``) or an explicit model."""
        self.config = config = config or BlazeFaceConfig()
        self._ref = "blazeface (explicit model)"
        if model is None:
            from emostream.paths import model_root

            repo = ModelRepository(config.model_root or model_root())
            version = repo.resolve(config.model, config.version)
            model = repo.onnx_path(config.model, version)
            self._ref = f"{config.model}/{version}"
        self.runner = OnnxRunner(
            model,
            RunnerConfig(providers=config.providers, intra_op_threads=config.intra_op_threads),
        )
        self.spec = read_spec(self.runner)
        self.anchors = generate_anchors(self.spec.anchors)
        outs = {o.name: o.shape for o in self.runner.session.get_outputs()}
        if set(outs) != {"regressors", "classificators"}:
            raise ValueError(f"expected outputs regressors and classificators, got {sorted(outs)}")
        if outs["regressors"][1] != len(self.anchors):
            raise ValueError(
                f"model has {outs['regressors'][1]} boxes, anchors {len(self.anchors)}"
            )
        self.threshold = (
            config.score_threshold if config.score_threshold is not None else self.spec.min_score
        )

    @classmethod
    def from_config(cls, config: DetectorConfigBase, model_root: Path) -> BlazeFaceDetector:
        assert isinstance(config, BlazeFaceConfig)
        if config.model_root is None:
            config = config.model_copy(update={"model_root": model_root})
        return cls(config)

    @property
    def ref(self) -> str:
        return self._ref

    # -- stages (public so that tests and the reference script share them) ---------------
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """(1, 3, S, S) float32 in [-1, 1], and the letterbox (scale, x offset, y offset)."""
        size = self.spec.input_size
        return letterbox(image, size)

    def raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        regressors, logits = self.runner.session.run(
            ["regressors", "classificators"], {self.runner.input_name: tensor}
        )
        return np.asarray(regressors), np.asarray(logits)

    def decode(self, regressors: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[x1, y1, x2, y2]`` boxes in [0, 1] input coordinates and scores, after NMS."""
        spec = self.spec
        clipped = np.clip(
            logits.reshape(-1).astype(np.float64), -spec.score_clipping, spec.score_clipping
        )
        scores = (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)
        keep = scores >= self.threshold
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        raw = regressors.reshape(-1, spec.num_coords)[keep, :4]
        a = self.anchors[keep]
        xc = raw[:, 0] / spec.box_scale * a[:, 2] + a[:, 0]
        yc = raw[:, 1] / spec.box_scale * a[:, 3] + a[:, 1]
        w = raw[:, 2] / spec.box_scale * a[:, 2]
        h = raw[:, 3] / spec.box_scale * a[:, 3]
        boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
        return nms(boxes, scores[keep], self.config.nms_iou, weighted=self.config.nms == "weighted")

    def detect(self, image: np.ndarray) -> list[Detection]:
        tensor, scale, ox, oy = self.preprocess(image)
        boxes, scores = self.decode(*self.raw(tensor))
        h, w = image.shape[:2]
        size = self.spec.input_size
        out: list[Detection] = []
        for (x1, y1, x2, y2), score in zip(boxes, scores, strict=True):
            px1 = max(0.0, (x1 * size - ox) / scale)
            py1 = max(0.0, (y1 * size - oy) / scale)
            px2 = min(float(w), (x2 * size - ox) / scale)
            py2 = min(float(h), (y2 * size - oy) / scale)
            box = (round(px1), round(py1), round(px2 - px1), round(py2 - py1))
            if box[2] <= 0 or box[3] <= 0 or box[2] < self.config.min_size:
                continue
            out.append(Detection(box, float(score)))
        out.sort(key=lambda d: d.box[2] * d.box[3], reverse=True)
        return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """MediaPipe's ImageToTensor with keep_aspect_ratio and BORDER_ZERO, as NCHW RGB.

    Returns the (1, 3, size, size) float32 tensor in [-1, 1] (borders are black, i.e. -1)
    and ``(scale, x_offset, y_offset)`` so that ``source = (input - offset) / scale``.
    """
    h, w = image.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    # Resize first, then convert colour: channel order commutes with resizing, and the
    # conversion then touches 128 px instead of the whole frame (the worker's hot path).
    small = cv2.resize(image, (nw, nh), interpolation=interp)
    code = cv2.COLOR_GRAY2RGB if small.ndim == 2 else cv2.COLOR_BGR2RGB
    resized = cv2.cvtColor(small, code)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[oy : oy + nh, ox : ox + nw] = resized
    tensor = canvas.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)[None]), scale, ox, oy
