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

Which model sees what is the ``range`` (issue 15): ``near`` runs the short-range model on
the whole frame (a webcam's faces); ``far`` the full-range model on the whole frame and on
overlapping tiles of ``16 x min_face_px`` (photos, recorded video, crowds: ``tiles.py``);
``auto`` both models on the whole frame (near faces plus mid-distance ones: meeting rooms).
Live sessions default to ``near``: ``auto`` costs about four times as much per detector run,
and on a 2-core machine that is what decides whether 16 streams keep up (docs/BENCHMARKS.md);
``emostream analyze`` defaults to ``far``. Whatever the passes of a frame found is merged into
one box per face.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from emostream.fields import OptionalCommaList
from emostream.models.detectors import tiles
from emostream.models.detectors.base import (
    Detection,
    DetectorConfigBase,
    FaceDetector,
    Range,
    with_root,
)
from emostream.models.detectors.blazeface_model import BlazeFaceModel
from emostream.models.detectors.boxes import to_detections
from emostream.models.detectors.ssd import MODEL_NAME
from emostream.models.repository import ModelRepository
from emostream.models.runner import RunnerConfig

#: The full-range model wants a face of about 12 px in its 192 px input: a tile of 16 x
#: ``min_face_px`` finds faces of ``min_face_px``.
TILE_PER_FACE = 16


class BlazeFaceConfig(DetectorConfigBase):
    type: Literal["blazeface"] = "blazeface"
    range: Range = Field(
        default="near",
        description="near: short-range model on the frame (webcams, calls: the live "
        "default); far: full-range model on the frame and on tiles (photos, crowds: the "
        "analyze default); auto: both models on the frame (meeting rooms; 4x near's cost)",
    )
    model: str = Field(default=MODEL_NAME, description="model name in the repository")
    version: str = Field(
        default="production", description="the short-range model (near, auto): version or alias"
    )
    far_version: str = Field(
        default="2", description="the full-range model (far, auto): version or alias"
    )
    min_face_px: int = Field(
        default=20, ge=4, description="far: smallest face the tiles look for (tile = 16 x this)"
    )
    tile_overlap: float = Field(
        default=tiles.OVERLAP,
        ge=0.0,
        le=0.75,
        description="far: share of a tile its neighbours see",
    )
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


#: Which variant each range's models must be, by the config field naming them.
_NEEDS: dict[Range, tuple[tuple[str, str], ...]] = {
    "near": (("version", "short"),),
    "far": (("far_version", "full"),),
    "auto": (("version", "short"), ("far_version", "full")),
}


class BlazeFaceDetector(FaceDetector):
    name = "blazeface"
    config_class = BlazeFaceConfig

    def __init__(
        self, config: BlazeFaceConfig | None = None, *, model: Path | bytes | None = None
    ) -> None:
        """The models ``config.range`` needs from the repository, or one explicit model
        (run on the whole frame, whatever its variant)."""
        self.config = config = config or BlazeFaceConfig()
        #: (model, tiled) per pass over a frame.
        self.passes: list[tuple[BlazeFaceModel, bool]] = []
        if model is not None:
            self.passes.append((self._load(model), False))
            self._ref = "blazeface (explicit model)"
            return
        from emostream.paths import model_root

        repo = ModelRepository(config.model_root or model_root())
        versions: list[str] = []
        for field, variant in _NEEDS[config.range]:
            version = repo.resolve(config.model, getattr(config, field))
            loaded = self._load(repo.onnx_path(config.model, version))
            if loaded.spec.variant != variant:
                raise ValueError(
                    f"detector.{field} {getattr(config, field)!r} is {config.model}/{version}, "
                    f"a {loaded.spec.variant}-range model; range {config.range} needs the "
                    f"{variant}-range one there"
                )
            versions.append(version)
            self.passes.append((loaded, config.range == "far"))
        self._ref = f"{config.model}/{'+'.join(versions)} ({config.range})"

    def _load(self, model: Path | bytes) -> BlazeFaceModel:
        c = self.config
        return BlazeFaceModel(
            model,
            RunnerConfig(providers=c.providers, intra_op_threads=c.intra_op_threads),
            score_threshold=c.score_threshold,
            nms_iou=c.nms_iou,
            weighted=c.nms == "weighted",
        )

    @classmethod
    def from_config(cls, config: DetectorConfigBase, model_root: Path) -> BlazeFaceDetector:
        assert isinstance(config, BlazeFaceConfig)
        return cls(with_root(config, model_root))

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def tile(self) -> int:
        """The side of a far tile, in frame pixels."""
        return TILE_PER_FACE * self.config.min_face_px

    def regions(self, image: np.ndarray, tiled: bool) -> list[tiles.Region | None]:
        """What one pass looks at: the whole frame (None), then its tiles when ``tiled``."""
        h, w = image.shape[:2]
        return [
            None,
            *(tiles.tile_layout(w, h, self.tile, self.config.tile_overlap) if tiled else []),
        ]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Every pass of every frame, one batched model call per model, merged per frame."""
        found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]] = [[] for _ in images]
        for rank, (model, tiled) in enumerate(self.passes):
            jobs = [(i, r) for i, im in enumerate(images) for r in self.regions(im, tiled)]
            views = [images[i] if r is None else r.view(images[i]) for i, r in jobs]
            for (i, r), (boxes, scores) in zip(jobs, model.run(views), strict=True):
                h, w = images[i].shape[:2]
                if r is None:
                    cut = np.zeros(len(boxes), bool)
                else:
                    boxes = boxes + np.array([r.x, r.y, r.x, r.y], np.float64)
                    cut = tiles.cut_by(boxes, r, w, h)
                found[i].append((boxes, scores, cut, rank))
        return [self._detections(im, parts) for im, parts in zip(images, found, strict=True)]

    def _detections(
        self, image: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]
    ) -> list[Detection]:
        """One frame's passes as one box per face, clipped to the frame, largest first.

        Where passes overlap (auto: near and far on the whole frame) the earlier pass's box
        wins whatever the scores: the two models frame a face differently (the far box is
        about 10 % smaller), and letting the score pick would flip the framing from frame
        to frame, and with it the emotion model's label on an ambiguous face.
        """
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        if len(parts) > 1:
            cut = np.concatenate([p[2] for p in parts])
            rank = np.concatenate([np.full(len(p[0]), p[3]) for p in parts])
            keep = tiles.merge(boxes, scores, cut, rank, iou_threshold=self.config.nms_iou)
            boxes, scores = boxes[keep], scores[keep]
        h, w = image.shape[:2]
        return to_detections(boxes, scores, w, h, self.config.min_size)

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]
