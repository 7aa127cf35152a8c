"""Detect less, track more: when a session's frame needs the detector, and its boxes when not.

The detector is the dearest step of a frame. Faces move little in 66 ms, so a worker keeps,
per session, the last frame it saw (gray) and that frame's boxes, and for the next frame
either carries the boxes along with optical flow (``models/face_tracking/flow.py``) or asks for a
detection. It asks when

- the schedule says so: ``detect_every`` frames processed since the last detection (1 =
  every frame). Processed, not received: when a loaded server drops (supersedes) frames,
  counting received ones would run the detector on nearly every frame it still processes,
  and load it further;
- it cannot follow: no state for the session yet, a frame out of order, more than
  ``max_gap`` frames it did not see (another worker took them), or a new frame size;
- a new face may have entered: the scene outside the tracked boxes changed from the frame
  before by more than ``scene_change`` grey levels (a 32x24 thumbnail, mean absolute
  difference): a cut, or someone stepping in. Against the frame before, not the last
  detection, so that a panning camera does not call the detector on every frame; a face
  that drifts in slowly is found by the schedule instead;
- a track is uncertain: fewer than ``min_quality`` of its points followed it, or its box
  shrank to nothing at the frame's edge.

Workers stay interchangeable: a worker without the state detects. Jobs without a session
(``/v1/predict``) are always detected. State is bounded by ``max_sessions`` (least recently
used first out) and forgotten after ``idle_s``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
from pydantic import BaseModel, Field

from emostream.models.face_tracking.flow import follow
from emostream.models.preprocess import to_gray
from emostream.pipeline.jobs import Box, Job

THUMB = (32, 24)  # the scene-change thumbnail (w, h): cheap, and blind to noise


class TrackingConfig(BaseModel):
    """``EMOSTREAM_TRACKING__*``: how often a live face stream runs the detector."""

    detect_every: int = Field(
        default=5, ge=1, description="processed frames per detector run (1: every frame)"
    )
    min_quality: float = Field(
        default=0.6, ge=0.0, le=1.0, description="share of a box's points that must follow it"
    )
    scene_change: float = Field(
        default=8.0,
        ge=0.0,
        description="mean grey-level change outside the tracked boxes that makes the "
        "detector look for a new face (0: never)",
    )
    max_gap: int = Field(
        default=4, ge=1, description="frames a worker may miss of a session and still track"
    )
    max_sessions: int = Field(
        default=256, ge=1, description="sessions whose state (a gray frame each) is kept"
    )
    idle_s: float = Field(default=30.0, gt=0.0, description="state of a silent session expires")


class Why(StrEnum):
    """Why a frame went to the detector (the ``reason`` label of detector runs)."""

    start = "start"  # no state for the session (first frame, other worker, expired)
    gap = "gap"  # frames missing, out of order, or a new frame size
    schedule = "schedule"  # detect_every processed frames since the last detection
    scene = "scene"  # the scene outside the boxes changed at once: a face may have entered
    uncertain = "uncertain"  # a box could not be followed
    stateless = "stateless"  # a job without a session, or detect_every 1


@dataclass(frozen=True)
class Plan:
    """Either the boxes flow carried into this frame, or why the detector must run."""

    gray: np.ndarray | None  # the frame in gray, kept to follow from (None: stateless)
    boxes: list[Box] | None = None
    why: Why | None = None


@dataclass
class _State:
    seq: int
    gray: np.ndarray
    boxes: list[Box]
    since_detect: int
    thumb: np.ndarray  # the scene of the frame before
    seen: float


def _thumb(gray: np.ndarray) -> np.ndarray:
    # every 4th pixel first: INTER_AREA over the whole frame costs ten times as much
    return cv2.resize(gray[::4, ::4], THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def _outside(boxes: Sequence[Box], shape: tuple[int, ...]) -> np.ndarray:
    """Thumbnail mask of what no box (grown by a quarter) covers: where a face may enter."""
    h, w = shape[:2]
    sx, sy = THUMB[0] / w, THUMB[1] / h
    mask = np.ones((THUMB[1], THUMB[0]), bool)
    for x, y, bw, bh in boxes:
        gx, gy = bw / 4, bh / 4
        x0, y0 = max(0, int((x - gx) * sx)), max(0, int((y - gy) * sy))
        x1 = min(THUMB[0], int(np.ceil((x + bw + gx) * sx)))
        y1 = min(THUMB[1], int(np.ceil((y + bh + gy) * sy)))
        mask[y0:y1, x0:x1] = False
    return mask


class FaceTracks:
    """Per-session tracking state of one worker, and the detect-or-follow decision."""

    def __init__(self, config: TrackingConfig | None = None) -> None:
        self.config = config or TrackingConfig()
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._states)

    def plan(self, job: Job) -> Plan:
        """Follow the session's boxes into this frame, or say why it needs the detector."""
        c = self.config
        if not job.session or c.detect_every == 1:
            return Plan(None, why=Why.stateless)
        gray = to_gray(job.payload)
        with self._lock:
            state = self._states.get(job.session)
        if state is None:
            return Plan(gray, why=Why.start)
        step = job.seq - state.seq
        if step < 1 or step > c.max_gap or state.gray.shape != gray.shape:
            return Plan(gray, why=Why.gap)
        if state.since_detect + 1 >= c.detect_every:
            return Plan(gray, why=Why.schedule)
        thumb = _thumb(gray)
        if c.scene_change > 0:
            mask = _outside(state.boxes, gray.shape)
            if mask.any() and float(np.abs(thumb - state.thumb)[mask].mean()) > c.scene_change:
                return Plan(gray, why=Why.scene)
        followed = follow(state.gray, gray, state.boxes)
        if any(f.quality < c.min_quality or f.box[2] < 2 or f.box[3] < 2 for f in followed):
            return Plan(gray, why=Why.uncertain)
        boxes = [f.box for f in followed]
        with self._lock:
            self._states[job.session] = _State(
                job.seq, gray, boxes, state.since_detect + 1, thumb, time.monotonic()
            )
            self._states.move_to_end(job.session)
        return Plan(gray, boxes=boxes)

    def detected(self, job: Job, plan: Plan, boxes: list[Box]) -> None:
        """Start following the boxes the detector found in this frame."""
        if plan.gray is None:
            return
        now = time.monotonic()
        state = _State(job.seq, plan.gray, list(boxes), 0, _thumb(plan.gray), now)
        with self._lock:
            self._states[job.session] = state
            self._states.move_to_end(job.session)
            self._evict(now)

    def forget(self, session: str) -> None:
        with self._lock:
            self._states.pop(session, None)

    def _evict(self, now: float) -> None:
        while len(self._states) > self.config.max_sessions:
            self._states.popitem(last=False)
        while self._states:
            oldest = next(iter(self._states.values()))
            if now - oldest.seen <= self.config.idle_s:
                break
            self._states.popitem(last=False)


def rounds(jobs: Sequence[tuple[int, Job]]) -> list[list[tuple[int, Job]]]:
    """Split a batch so that each round holds at most one frame per session, in seq order.

    A frame is followed from the one before it, so a session's second frame in a batch can
    only be planned once its first is done; jobs without a session never wait.
    """
    out: list[list[tuple[int, Job]]] = []
    depth: dict[str, int] = {}
    for item in sorted(jobs, key=lambda ij: (ij[1].session, ij[1].seq)):
        session = item[1].session
        k = depth.get(session, 0) if session else 0
        if session:
            depth[session] = k + 1
        while len(out) <= k:
            out.append([])
        out[k].append(item)
    return out
