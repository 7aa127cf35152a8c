"""The face detectors ``POST /v1/predict`` looks with: the offline choice, not the live one.

A photo sent to the API is analysed as ``emostream analyze`` would (``analyze_range``
decides: ``far`` unless ``detector.range`` is set), with ``?range=`` to choose. Each
detector is built once, on first use, and kept (with the second pass photos take at far:
``models/detectors/cascade.py``): a model load is never paid per request. A range that
matches the live detector reuses it.
"""

from __future__ import annotations

import threading

from emostream.analyze_range import DetectorRange, analyze_settings
from emostream.models.detectors import create_detector
from emostream.models.face import FaceAnalyzer, ThreadLocalDetector, stills_for
from emostream.settings import Settings


class PredictDetectors:
    """Detector per resolved config, built on first use (thread-safe) and cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: per detector config: the detector, and the still-image cascade (far)
        self._built: dict[str, tuple[ThreadLocalDetector, ThreadLocalDetector | None]] = {}
        self._lock = threading.Lock()

    def check(self, chosen: DetectorRange | None) -> None:
        """Raises ``RangeNotApplicableError`` when a range is asked of a detector without one."""
        analyze_settings(self.settings, chosen)

    def analyzer(self, live: FaceAnalyzer, chosen: DetectorRange | None) -> FaceAnalyzer:
        """``live`` (the served model) looking with the offline detector for ``chosen``.

        Call from a worker thread: the first use of a range loads its model(s)."""
        config = analyze_settings(self.settings, chosen).detector
        if config == self.settings.detector and live.stills is None:
            return live
        key = config.model_dump_json()
        with self._lock:
            built = self._built.get(key)
            if built is None:
                root = self.settings.model_root
                detector = (
                    live.detector
                    if config == self.settings.detector
                    else ThreadLocalDetector(lambda: create_detector(config, root))
                )
                built = (detector, stills_for(config, self.settings.photo, root))
                self._built[key] = built
        return live.with_detector(*built)
