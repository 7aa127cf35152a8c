"""The face model as the face benchmarks time it: the classifier, its detector, the worker.

``bench face`` (``model_alone``), ``bench worker`` (``worker_analyzer``, ``from_analyzer``)
and the shared timing helpers in ``measure.py`` build what they time here, as a
:class:`Subject`, and call the face path only through its methods (detect, classify,
analyze, prepare, model, predict), so those two benches and their reports do not follow
every change of ``Classifier``, ``FaceAnalyzer`` or ``run_batch``.

It is not the only place the benchmarks touch the core: the detector, voice, stream,
soak and version benches (``detector_table.py``, ``voice.py``, ``voice_vad.py``,
``stream*.py``, ``soak*.py``, ``face_versions.py``, ``fer_compare.py``) import the core
modules they measure directly, and even ``face.py`` and ``worker.py`` import the model
repository, the data paths and ``FaceAnalyzer`` (for its type) themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from emostream.models.detectors.base import FaceDetector
    from emostream.models.face import FaceAnalyzer
    from emostream.models.runner import Classifier
    from emostream.pipeline.jobs import Box
    from emostream.pipeline.outcomes import Outcome


@dataclass
class Subject:
    """The classifier and the detect-then-classify analyzer a bench times."""

    classifier: Classifier
    analyzer: FaceAnalyzer
    detector_ref: str  # ``face-detector/<version>``, or the backend's name

    @property
    def model_ref(self) -> str:
        return self.classifier.card.ref

    @property
    def classes(self) -> list[str]:
        return list(self.classifier.card.classes)

    @property
    def providers(self) -> list[str]:
        """The classifier's session providers, the one used first."""
        return list(self.classifier.runner.providers)

    @property
    def detector_name(self) -> str:
        return self.analyzer.detector.name

    @property
    def crop_margin(self) -> float:
        return self.classifier.spec.crop_margin

    @property
    def intra_op_threads(self) -> int:
        """The classifier session's intra-op threads; 0 where ONNX Runtime chose."""
        opts = self.classifier.runner.session.get_session_options()
        return int(opts.intra_op_num_threads)

    def detector_providers(self) -> list[str]:
        """Where detection ran (BlazeFace keeps its 128 px model on CPU by default), read off
        this thread's detector once it has run; empty for detectors without ONNX."""
        det: Any = self.analyzer.detector.current
        return list(getattr(getattr(det, "runner", None), "providers", []))

    # -- the calls the benches time --------------------------------------------------------

    def detect(self, frame: np.ndarray) -> list[Box]:
        return self.analyzer.detect(frame)

    def classify(self, frames: Sequence[np.ndarray], boxes: Sequence[list[Box]]) -> None:
        """Every face of every frame in one batched model call (crop, preprocess, model)."""
        self.analyzer.classify(frames, boxes)

    def analyze(self, frame: np.ndarray, seq: int = 0) -> Outcome:
        """Detect (or follow) and classify one frame through ``run_batch``, the path every
        frame takes; consecutive ``seq`` numbers make one stream, whose faces the analyzer
        follows between detector runs as it does a session's."""
        from emostream.pipeline.analyzer import run_batch
        from emostream.pipeline.jobs import FrameInfo, Job

        job = Job("bench", seq, 0.0, frame, FrameInfo(frame.shape[1], frame.shape[0]))
        return run_batch(self.analyzer, [job])[0]

    def every_frame(self) -> Subject:
        """The same classifier and detector with the detector run on every frame."""
        from emostream.models.face import FaceAnalyzer
        from emostream.models.face_tracking.schedule import FaceTracks, TrackingConfig

        tracks = FaceTracks(TrackingConfig(detect_every=1))
        analyzer = FaceAnalyzer(self.classifier, self.analyzer.detector, tracks=tracks)
        return Subject(self.classifier, analyzer, self.detector_ref)

    @property
    def detect_every(self) -> int:
        return self.analyzer.tracks.config.detect_every

    def found(self, result: Outcome) -> tuple[int, str | None]:
        """Faces in an :meth:`analyze` result, and the label of the first (largest) one."""
        from emostream.pipeline.outcomes import FaceScores, Scored

        if not isinstance(result, Scored) or not isinstance(result.result, FaceScores):
            return 0, None
        scores = result.result.scores
        label = self.classes[int(np.argmax(scores[0]))] if len(scores) else None
        return len(result.result.boxes), label

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        from emostream.models.preprocess import face_crop

        return face_crop(image, box, self.crop_margin)

    def prepare(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The model's input tensor for ``crops`` (preprocessing, timed apart from the model)."""
        from emostream.models.preprocess import prepare

        return prepare(crops, self.classifier.spec)

    def model(self, tensor: np.ndarray) -> np.ndarray:
        """The bare model call on a prepared tensor."""
        return self.classifier.predict_tensor(tensor)

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessing and the model call, as the worker runs them."""
        return self.classifier.predict(crops)

    def with_haar(self) -> Subject:
        """The same classifier behind OpenCV's Haar cascade, for comparison."""
        from emostream.models.detectors.plugins.haar import HaarDetector

        return Subject(self.classifier, _analyzer(self.classifier, HaarDetector), "haar")


def _analyzer(classifier: Classifier, detector: Callable[[], FaceDetector]) -> FaceAnalyzer:
    from emostream.models.face import FaceAnalyzer, ThreadLocalDetector

    return FaceAnalyzer(classifier, ThreadLocalDetector(detector))


def model_alone(model: str, threads: int, version: str | None = None) -> Subject:
    """``bench face``: the model (``version``, a version or alias; production when None) with
    ``threads`` intra-op threads (one inter-op), behind the default detector; not the
    worker's analyzer, whose settings differ between machines."""
    from emostream.models.detectors import create_detector
    from emostream.models.repository import PRODUCTION, ModelMissingError, ModelRepository
    from emostream.models.runner import Classifier, RunnerConfig
    from emostream.paths import model_root

    try:
        classifier = Classifier.from_repository(
            ModelRepository(model_root()),
            model,
            alias=version or PRODUCTION,
            config=RunnerConfig(intra_op_threads=threads, inter_op_threads=1),
        )
    except ModelMissingError as exc:
        raise SystemExit(f"{exc}; run `emostream models pull {model}` first") from None
    analyzer = _analyzer(classifier, lambda: create_detector(None, model_root()))
    return Subject(classifier, analyzer, analyzer.detector.name)


def from_analyzer(analyzer: FaceAnalyzer) -> Subject:
    """What a :class:`FaceAnalyzer` (the worker's, or a test's fixture) runs."""
    return Subject(analyzer.classifier, analyzer, analyzer.detector.ref)


def worker_analyzer(providers: list[str] | None, threads: int | None) -> Subject:
    """``bench worker``: the worker's own analyzer from Settings (``EMOSTREAM_*``), with
    providers and intra-op threads overridden when given."""
    from emostream.models.face import FaceAnalyzer
    from emostream.models.repository import ModelMissingError
    from emostream.settings import Settings

    s = Settings()
    update: dict[str, object] = {}
    if providers:
        update["providers"] = providers
    if threads is not None:
        update["intra_op_threads"] = threads
    runner = s.runner.model_copy(update=update)
    try:
        return from_analyzer(FaceAnalyzer.from_settings(s.model_copy(update={"runner": runner})))
    except ModelMissingError as exc:
        raise SystemExit(f"{exc}; run `emostream models pull` first") from None
    except ValueError as exc:  # a provider this onnxruntime build lacks
        raise SystemExit(f"bench worker: {exc}") from None
