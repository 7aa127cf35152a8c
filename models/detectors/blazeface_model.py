"""One imported BlazeFace model: its decoding spec, anchors and batched inference.

``run`` letterboxes every image (a frame, or a tile of one as a numpy view) into one
preallocated (N, 3, S, S) tensor and calls ONNX Runtime once; imports whose batch dimension
is fixed at 1 (older conversions) are run one image at a time instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emostream.models.detectors.letterbox import letterbox_into
from emostream.models.detectors.ssd import METADATA_KEY, BlazeFaceSpec, generate_anchors, nms
from emostream.models.runner import OnnxRunner, RunnerConfig

#: An image's faces: ``[x1, y1, x2, y2]`` boxes in its own pixels (not clipped) and scores.
Found = tuple[np.ndarray, np.ndarray]


def read_spec(runner: OnnxRunner) -> BlazeFaceSpec:
    meta = runner.session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ValueError(f"ONNX model has no {METADATA_KEY!r} metadata: not a BlazeFace import")
    return BlazeFaceSpec.model_validate_json(meta[METADATA_KEY])


class BlazeFaceModel:
    def __init__(
        self,
        model: Path | bytes,
        runner: RunnerConfig,
        *,
        score_threshold: float | None = None,
        nms_iou: float = 0.3,
        weighted: bool = True,
    ) -> None:
        self.runner = OnnxRunner(model, runner)
        self.spec = read_spec(self.runner)
        self.anchors = generate_anchors(self.spec.anchors)
        outs = {o.name: o.shape for o in self.runner.session.get_outputs()}
        if set(outs) != {"regressors", "classificators"}:
            raise ValueError(f"expected outputs regressors and classificators, got {sorted(outs)}")
        if outs["regressors"][1] != len(self.anchors):
            raise ValueError(
                f"model has {outs['regressors'][1]} boxes, anchors {len(self.anchors)}"
            )
        self.threshold = score_threshold if score_threshold is not None else self.spec.min_score
        self.nms_iou, self.weighted = nms_iou, weighted
        #: False for imports with a fixed batch of 1: ``raw`` then runs row by row.
        self.batched = self.runner.session.get_inputs()[0].shape[0] != 1

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The (N, 3, S, S) float32 batch in [-1, 1] and each row's letterbox
        ``(scale, x offset, y offset)`` as an (N, 3) array."""
        size = self.spec.input_size
        tensor = np.empty((len(images), 3, size, size), np.float32)
        boxes = np.array([letterbox_into(im, tensor[i]) for i, im in enumerate(images)])
        return tensor, boxes.reshape(len(images), 3)

    def raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``regressors`` (N, K, 16) and ``classificators`` (N, K, 1) of a batch."""
        if not self.batched and len(tensor) != 1:
            rows = [self.raw(tensor[i : i + 1]) for i in range(len(tensor))]
            return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
        regressors, logits = self.runner.session.run(
            ["regressors", "classificators"], {self.runner.input_name: tensor}
        )
        return np.asarray(regressors), np.asarray(logits)

    def decode(self, regressors: np.ndarray, logits: np.ndarray) -> Found:
        """One row's ``[x1, y1, x2, y2]`` boxes in [0, 1] input coordinates and scores,
        after NMS."""
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
        return nms(boxes, scores[keep], self.nms_iou, weighted=self.weighted)

    def run(self, images: Sequence[np.ndarray]) -> list[Found]:
        """Each image's faces in its own pixels, from one batched model call."""
        if not images:
            return []
        tensor, letterboxes = self.preprocess(images)
        regressors, logits = self.raw(tensor)
        size = self.spec.input_size
        out: list[Found] = []
        for i, (scale, ox, oy) in enumerate(letterboxes):
            boxes, scores = self.decode(regressors[i], logits[i])
            px = (boxes * size - np.array([ox, oy, ox, oy], np.float32)) / np.float32(scale)
            out.append((px.astype(np.float64), scores))
        return out
