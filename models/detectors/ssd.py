"""BlazeFace's SSD head: the decoding spec stored with each import, its anchors, and NMS.

Pure numpy, no model: what ``blazeface_model`` needs to turn raw outputs into boxes, and
what the importer (``emostream.training.blazeface_import``) writes into the ONNX metadata.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

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
