"""MTCNN (facenet-pytorch's weights, MIT) as a cascade of three ONNX nets on ONNX Runtime.

Imported (and converted from torch) by ``emostream models pull mtcnn``
(``training.mtcnn_import``); torch is not needed here. The cascade is facenet-pytorch's
``detect_face``: an image pyramid from ``min_face_size`` down by ``factor`` (0.709); PNet
on every level proposes 12x12 windows, NMS per level (0.5) then across levels (0.7); the
proposals, regressed and squared, are cropped to 24x24 for RNet (threshold, NMS 0.7,
regression) and to 48x48 for ONet (threshold, regression, NMS by the smaller area). The
crops of a stage go through one model call. Slower than one-shot detectors on big frames,
but a classic baseline that finds small faces; ``max_side`` shrinks big frames first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from emostream.fields import OptionalCommaList
from emostream.models.detectors.base import (
    Detection,
    DetectorConfigBase,
    FaceDetector,
    with_root,
)
from emostream.models.detectors.boxes import nms_indices, scaled_size, to_detections
from emostream.models.repository import ModelMissingError, ModelRepository
from emostream.models.runner import OnnxRunner, RunnerConfig

METADATA_KEY = "emostream.mtcnn"


class MtcnnConfig(DetectorConfigBase):
    type: Literal["mtcnn"] = "mtcnn"
    model: str = Field(default="mtcnn", description="model name in the repository")
    version: str = Field(default="production", description="version or alias")
    model_root: Path | None = Field(default=None, description="None: the settings' model root")
    min_face_size: int = Field(default=20, ge=12, description="smallest face (working px)")
    factor: float = Field(default=0.709, gt=0.1, lt=1.0, description="pyramid step")
    thresholds: tuple[float, float] = Field(
        default=(0.6, 0.7), description="P- and R-net face probability thresholds"
    )
    score_threshold: float = Field(default=0.7, ge=0.0, le=1.0, description="the O-net's")
    nms_iou: float = Field(default=0.7, gt=0.0, le=1.0, description="facenet-pytorch's 0.7")
    max_side: int = Field(
        default=640, ge=0, description="frames are shrunk to this longer side; 0: full size"
    )
    min_size: int = Field(default=0, ge=0, description="drop faces narrower than this (px)")
    providers: OptionalCommaList = Field(
        default_factory=lambda: ["CPUExecutionProvider"], description="None: auto (CUDA first)"
    )
    intra_op_threads: int = Field(default=1, ge=0, description="0: ONNX Runtime decides")


def _normalise(rgb: np.ndarray) -> np.ndarray:
    return np.asarray((rgb.astype(np.float32) - 127.5) * 0.0078125)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (facenet-pytorch's ``rerec``)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes moved by a net's offsets, in units of the (inclusive) box size (``bbreg``)."""
    wh = np.tile((boxes[:, 2:4] - boxes[:, 0:2] + 1), 2)
    return np.asarray(boxes + reg * wh)


def crops(rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """(N, 3, side, side) normalised crops of ``boxes`` (clipped to the image, as
    facenet-pytorch's ``pad``)."""
    h, w = rgb.shape[:2]
    b = np.trunc(boxes).astype(np.int64)
    x1, y1 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
    x2, y2 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    out = np.zeros((len(boxes), side, side, 3), np.float32)
    for i in range(len(boxes)):
        if x2[i] > x1[i] and y2[i] > y1[i]:
            patch = rgb[y1[i] : y2[i], x1[i] : x2[i]]
            out[i] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(_normalise(out).transpose(0, 3, 1, 2))


class MtcnnDetector(FaceDetector):
    name = "mtcnn"
    config_class = MtcnnConfig

    def __init__(self, config: MtcnnConfig | None = None) -> None:
        from emostream.paths import model_root

        self.config = c = config or MtcnnConfig()
        repo = ModelRepository(c.model_root or model_root())
        version = repo.resolve(c.model, c.version)
        self._ref = f"{c.model}/{version}"
        runner = RunnerConfig(providers=c.providers, intra_op_threads=c.intra_op_threads)
        self.pnet = OnnxRunner(repo.onnx_path(c.model, version), runner)
        meta = self.pnet.session.get_modelmeta().custom_metadata_map
        hashes: dict[str, str] = json.loads(meta.get(METADATA_KEY, "{}"))
        nets: dict[str, OnnxRunner] = {}
        for net in ("rnet", "onet"):
            data = (repo.version_dir(c.model, version) / f"{net}.onnx").read_bytes()
            if hashlib.sha256(data).hexdigest() != hashes.get(f"{net}.onnx"):
                raise ModelMissingError(c.model, f"{self._ref}: {net}.onnx fails its sha256")
            nets[net] = OnnxRunner(data, runner)
        self.rnet, self.onet = nets["rnet"], nets["onet"]

    @classmethod
    def from_config(cls, config: DetectorConfigBase, model_root: Path) -> MtcnnDetector:
        assert isinstance(config, MtcnnConfig)
        return cls(with_root(config, model_root))

    @property
    def ref(self) -> str:
        return self._ref

    def scales(self, height: int, width: int) -> list[float]:
        m = 12.0 / self.config.min_face_size
        side, scale, out = min(height, width) * m, m, []
        while side >= 12:
            out.append(scale)
            scale, side = scale * self.config.factor, side * self.config.factor
        return out

    def propose(self, rgb: np.ndarray) -> np.ndarray:
        """Stage 1: (K, 9) rows ``x1, y1, x2, y2, score, 4 offsets`` over the pyramid."""
        h, w = rgb.shape[:2]
        found = []
        for s in self.scales(h, w):
            size = (int(w * s + 1), int(h * s + 1))
            level = _normalise(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
            tensor = level.transpose(2, 0, 1)[None]
            reg, prob = self.pnet.session.run(["reg", "prob"], {"input": tensor})
            ys, xs = np.nonzero(prob[0, 1] >= self.config.thresholds[0])
            if not len(ys):
                continue
            cells = np.c_[xs, ys].astype(np.float32)
            q1, q2 = np.floor((2 * cells + 1) / s), np.floor((2 * cells + 12) / s)
            rows = np.c_[q1, q2, prob[0, 1, ys, xs], reg[0][:, ys, xs].T]
            found.append(rows[nms_indices(rows[:, :4], rows[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 9), np.float32)
        rows = np.concatenate(found)
        return np.asarray(rows[nms_indices(rows[:, :4], rows[:, 4], self.config.nms_iou)])

    def cascade(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[x1, y1, x2, y2]`` boxes and scores of one RGB image after all three stages."""
        c = self.config
        rows = self.propose(rgb)
        if not len(rows):
            return np.zeros((0, 4)), np.zeros(0)
        wh = np.tile(rows[:, 2:4] - rows[:, 0:2], 2)
        boxes = square(rows[:, :4] + rows[:, 5:9] * wh)
        reg, prob = self.rnet.session.run(["reg", "prob"], {"input": crops(rgb, boxes, 24)})
        ok = prob[:, 1] > c.thresholds[1]
        boxes, scores, reg = boxes[ok], prob[ok, 1], reg[ok]
        keep = nms_indices(boxes, scores, c.nms_iou)
        boxes = square(regress(boxes[keep], reg[keep]))
        if not len(boxes):
            return np.zeros((0, 4)), np.zeros(0)
        reg, _, prob = self.onet.session.run(None, {"input": crops(rgb, boxes, 48)})
        ok = prob[:, 1] > c.score_threshold
        boxes, scores = regress(boxes[ok], reg[ok]), prob[ok, 1]
        keep = nms_indices(boxes, scores, c.nms_iou, mode="min")
        return boxes[keep], scores[keep]

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        scale, sw, sh = scaled_size(w, h, self.config.max_side)
        if scale != 1.0:
            image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        code = cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB
        boxes, scores = self.cascade(cv2.cvtColor(image, code))
        return to_detections(boxes / scale, scores, w, h, self.config.min_size)
