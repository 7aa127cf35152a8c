"""The face analyzer: frames in, faces with emotion scores out, for every entry point.

Each frame's boxes come from the detector or, between detector runs, from optical flow
(``models/face_tracking/schedule.py`` decides per session). The frames that need the detector are
detected together, one batched detector call; then one classifier call scores every face
of every frame in the batch, whichever session it came from: that is what lets one worker
serve many sessions with one ONNX Runtime call. Boxes are found on the (downscaled)
payload and reported in source-frame pixels. A frame that cannot be processed fails
alone; the batch goes on.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from emostream import metrics
from emostream.models.classifier_analyzer import ClassifierAnalyzer
from emostream.models.detectors import create_detector
from emostream.models.detectors.base import Detection, DetectorConfigBase, FaceDetector
from emostream.models.detectors.cascade import Cascade, PhotoConfig, second_pass
from emostream.models.drift import DriftConfig
from emostream.models.face_tracking.schedule import FaceTracks, Plan, TrackingConfig, rounds
from emostream.models.preprocess import face_crop
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, RunnerConfig
from emostream.pipeline.jobs import Box, Job
from emostream.pipeline.outcomes import FaceScores, Outcome, Scored, fail

if TYPE_CHECKING:
    from emostream.settings import Settings


class FaceModelConfig(BaseModel):
    """``EMOSTREAM_FACE__*``: which face-emotion model the process serves."""

    model: str = Field(default="face-emotion", description="model name in the repository")
    alias: str = Field(default="production", description="the alias (or version) to serve")
    watch_interval_s: float = Field(
        default=1.0,
        ge=0.0,
        description="how often a running process looks for a new version of the alias "
        "(and a shadow) in aliases.json, to switch to it; 0 = never switch",
    )


class ThreadLocalDetector:
    """OpenCV cascades are not safe to share between threads: give each thread its own."""

    def __init__(self, factory: Callable[[], FaceDetector]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._local.det = first = factory()
        self.name, self.ref = first.name, first.ref

    @property
    def current(self) -> FaceDetector:
        """This thread's detector (built on first use)."""
        det: FaceDetector | None = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = self._factory()
        return det

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.current.detect(image)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return self.current.detect_batch(images)


def _source_box(box: Box, scale: float) -> Box:
    """Boxes are found on the downscaled frame; messages use source-frame pixels."""
    if scale == 1.0:
        return box
    return (
        round(box[0] / scale),
        round(box[1] / scale),
        round(box[2] / scale),
        round(box[3] / scale),
    )


def payload_box(box: Box, scale: float) -> Box:
    """The payload box a source box came from: inverts ``_source_box`` exactly.

    ``_source_box`` rounds ``b / scale``, off by at most 0.5 source px, which is below 0.5
    payload px for a scale below 1, so rounding ``s * scale`` gives ``b`` back.
    """
    if scale == 1.0:
        return box
    return (
        round(box[0] * scale),
        round(box[1] * scale),
        round(box[2] * scale),
        round(box[3] * scale),
    )


def _bad_frame(frame: np.ndarray) -> str | None:
    if frame.ndim not in (2, 3) or frame.size == 0 or frame.dtype != np.uint8:
        return f"bad frame {frame.shape} {frame.dtype}"
    return None


class FaceAnalyzer(ClassifierAnalyzer):
    """Detector + classifier + the model's tally: the ``Analyzer`` of the face modality."""

    modality = "face"

    def __init__(
        self,
        classifier: Classifier,
        detector: ThreadLocalDetector,
        drift: DriftConfig | None = None,
        tracks: FaceTracks | None = None,
        stills: ThreadLocalDetector | None = None,
    ) -> None:
        super().__init__(classifier, drift)
        self.detector = detector
        self.tracks = tracks if tracks is not None else FaceTracks()  # empty is falsy
        #: what a still image (a frame without a session: a photo) is detected with, when
        #: not ``detector``: the thorough cascade (models/detectors/cascade.py)
        self.stills = stills

    @classmethod
    def load(
        cls,
        repo: ModelRepository,
        model: FaceModelConfig,
        runner: RunnerConfig,
        detector: DetectorConfigBase,
        drift: DriftConfig | None = None,
        tracking: TrackingConfig | None = None,
        photo: PhotoConfig | None = None,
    ) -> FaceAnalyzer:
        """The model an alias names, with its detector (raises ModelMissingError if absent),
        and for still images the cascade ``photo`` adds when the range is far."""
        classifier = Classifier.from_repository(repo, model.model, model.alias, runner)
        det = ThreadLocalDetector(lambda: create_detector(detector, repo.root))
        return cls(
            classifier, det, drift, FaceTracks(tracking), stills_for(detector, photo, repo.root)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceAnalyzer:
        """The production analyzer a process runs: model, runner, detector, drift window."""
        return cls.load(
            ModelRepository(settings.model_root),
            settings.face,
            settings.runner,
            settings.detector,
            settings.drift,
            settings.tracking,
            settings.photo,
        )

    def rebuilt(self, classifier: Classifier, drift: DriftConfig | None) -> FaceAnalyzer:
        """The analyzer of a promoted version, with the detector and tracks already in use."""
        return FaceAnalyzer(classifier, self.detector, drift, self.tracks, self.stills)

    def with_detector(
        self, detector: ThreadLocalDetector, stills: ThreadLocalDetector | None = None
    ) -> FaceAnalyzer:
        """This analyzer looking with another detector (``/v1/predict``'s range), and
        ``stills`` for photos: the classifier, its tally and the tracks are shared, so
        predictions count as before."""
        other = copy.copy(self)
        other.detector, other.stills = detector, stills
        return other

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Boxes for every frame (followed, or detected in one call), then one classify call."""
        out: dict[int, Outcome] = {}
        boxes: dict[int, list[Box]] = {}
        live: list[tuple[int, Job]] = []
        for i, job in enumerate(jobs):
            problem = _bad_frame(job.payload)
            if problem is not None:
                out[i] = fail(job, problem)
            elif not job.frame.detect:  # the whole frame is one aligned face
                boxes[i] = [_whole(job.payload)]
            else:
                live.append((i, job))
        for batch in rounds(live):  # a session's later frame follows from its earlier one
            self._boxes(batch, boxes, out)
        done = [(i, jobs[i]) for i in sorted(boxes)]
        scores = self.classify([j.payload for _, j in done], [boxes[i] for i, _ in done])
        for (i, job), frame_scores in zip(done, scores, strict=True):
            source = [_source_box(b, job.frame.scale) for b in boxes[i]]
            out[i] = Scored(
                job.header(), self.model, FaceScores(source, frame_scores, self.classes)
            )
        return [out[i] for i in range(len(jobs))]

    def _boxes(
        self, batch: list[tuple[int, Job]], boxes: dict[int, list[Box]], out: dict[int, Outcome]
    ) -> None:
        """Follow what can be followed; detect the rest in one call (each alone on failure)."""
        todo: list[tuple[int, Job, Plan]] = []
        for i, job in batch:
            try:
                plan = self.tracks.plan(job)
            except Exception as exc:  # a frame flow cannot take: the detector may still
                out[i] = fail(job, f"tracking failed: {exc}")
                continue
            if plan.boxes is not None:
                boxes[i] = plan.boxes
                metrics.FACE_FRAMES.labels("followed").inc()
            else:
                todo.append((i, job, plan))
        if not todo:
            return
        stills = self.stills
        if stills is not None:  # photos take the cascade, frames of a session the detector
            self._detect([t for t in todo if not t[1].session], stills, boxes, out)
            todo = [t for t in todo if t[1].session]
        self._detect(todo, self.detector, boxes, out)

    def _detect(
        self,
        todo: list[tuple[int, Job, Plan]],
        detector: ThreadLocalDetector,
        boxes: dict[int, list[Box]],
        out: dict[int, Outcome],
    ) -> None:
        """``todo``'s frames through ``detector`` in one call (each alone on failure)."""
        if not todo:
            return
        found: list[list[Detection] | None]
        try:
            found = list(detector.detect_batch([j.payload for _, j, _ in todo]))
        except Exception:  # one frame spoils a batched call: find which, alone
            found = [self._detect_alone(detector, job, i, out) for i, job, _ in todo]
        for (i, job, plan), dets in zip(todo, found, strict=True):
            if dets is None:
                continue
            boxes[i] = [d.box for d in dets]
            self.tracks.detected(job, plan, boxes[i])
            metrics.FACE_FRAMES.labels(str(plan.why)).inc()

    def _detect_alone(
        self, detector: ThreadLocalDetector, job: Job, i: int, out: dict[int, Outcome]
    ) -> list[Detection] | None:
        try:
            return detector.detect(job.payload)
        except Exception as exc:  # a frame the detector cannot take
            out[i] = fail(job, f"detection failed: {exc}")
            return None

    # -- stages (public so that benchmarks time them separately) -------------------------
    def detect(self, frame: np.ndarray) -> list[Box]:
        return [d.box for d in self.detector.detect(frame)]

    def classify(
        self, frames: Sequence[np.ndarray], boxes: Sequence[list[Box]]
    ) -> list[np.ndarray]:
        """(faces, classes) scores for the given boxes of each frame, in one model call."""
        margin = self.classifier.spec.crop_margin
        crops = [face_crop(f, b, margin) for f, bs in zip(frames, boxes, strict=True) for b in bs]
        scores = self.classifier.predict(crops)
        out, i = [], 0
        for bs in boxes:
            out.append(scores[i : i + len(bs)])
            i += len(bs)
        return out


def stills_for(
    detector: DetectorConfigBase, photo: PhotoConfig | None, root: Path
) -> ThreadLocalDetector | None:
    """The still-image cascade ``photo`` makes of ``detector`` (None: no second pass)."""
    second = second_pass(detector, photo) if photo is not None else None
    if second is None:
        return None
    return ThreadLocalDetector(
        lambda: Cascade(create_detector(detector, root), create_detector(second, root))
    )


def _whole(frame: np.ndarray) -> Box:
    return (0, 0, frame.shape[1], frame.shape[0])
