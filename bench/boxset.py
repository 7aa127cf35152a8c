"""The labelled face-box evaluation set (`bench/face_boxes/boxes.json`).

Images copied from PyPI packages live in `bench/face_boxes/images/`; images and video
frames of the shared data folder (`EMOSTREAM_DATA`) are referenced by path, never copied.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emostream.bench.box_metrics import ImageScore, match
from emostream.models.detectors.base import Detection

log = logging.getLogger(__name__)

SET_DIR = Path(__file__).resolve().parent / "face_boxes"
BOXES_JSON = SET_DIR / "boxes.json"

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class LabelledImage:
    """One image of the set: its faces (box, tags), ignore regions and where it comes from."""

    name: str
    source: str
    licence: str
    width: int
    height: int
    faces: list[tuple[Box, tuple[str, ...]]]
    ignore: list[Box]
    path: Path = field(repr=False)
    frame: int | None = None
    shared: bool = False

    def image(self) -> np.ndarray:
        """The image as BGR uint8 (a video frame counted from 0 in decode order)."""
        import cv2

        if self.frame is None:
            img = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
            if img is None:
                raise OSError(f"cannot decode {self.path}")
            return np.asarray(img, dtype=np.uint8)
        import av

        with av.open(str(self.path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == self.frame:
                    return np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
        raise OSError(f"{self.path} has no frame {self.frame}")

    def match(self, found: Sequence[Detection]) -> ImageScore:
        """A detector's ``found`` faces matched to this image's labels (box_metrics)."""
        return match(
            np.array([box for box, _ in self.faces], float).reshape(-1, 4),
            np.array(self.ignore, float).reshape(-1, 4),
            np.array([d.box for d in found], float).reshape(-1, 4),
            np.array([d.score for d in found], float),
        )


def default_data_root() -> Path | None:
    """`EMOSTREAM_DATA`, or `../shared/data` beside the checkout; None when it is absent."""
    env = os.environ.get("EMOSTREAM_DATA")
    root = Path(env) if env else SET_DIR.parents[2] / "shared" / "data"
    return root if root.is_dir() else None


def _box(v: Any) -> Box:
    x, y, w, h = (int(a) for a in v)
    return (x, y, w, h)


def load_set(data_root: Path | None, path: Path = BOXES_JSON) -> list[LabelledImage]:
    """All images of the set; those of the shared data are skipped when data_root is None."""
    doc = json.loads(path.read_text())
    out: list[LabelledImage] = []
    skipped = 0
    for e in doc["images"]:
        if "data" in e:
            if data_root is None:
                skipped += 1
                continue
            file, shared = data_root / e["data"], True
        else:
            file, shared = path.parent / e["file"], False
        out.append(
            LabelledImage(
                name=e["name"],
                source=e["source"],
                licence=e["licence"],
                width=int(e["width"]),
                height=int(e["height"]),
                faces=[(_box(f["box"]), tuple(f.get("tags", []))) for f in e["faces"]],
                ignore=[_box(b) for b in e.get("ignore", [])],
                path=file,
                frame=e.get("frame"),
                shared=shared,
            )
        )
    if skipped:
        log.warning("face boxes: %d shared-data images skipped (no data root)", skipped)
    return out
