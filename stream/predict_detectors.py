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
from emostream.models.detectors.cascade import second_pass
from emostream.models.face import FaceAnalyzer, ThreadLocalDetector, stills_for
from emostream.settings import Settings

#: A range's detector, and its still-image cascade (None below ``far``).
Built = tuple[ThreadLocalDetector, ThreadLocalDetector | None]


class PredictDetectors:
    """Detector per resolved config, built on first use (thread-safe) and cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: per detector config (its JSON): the detector and the still-image cascade
        self._built: dict[str, Built] = {}
        #: per range asked for (None: the default): its config's key, or None where the
        #: live analyzer already looks that way; a request costs a lookup, not a settings copy
        self._keys: dict[DetectorRange | None, str | None] = {}
        self._lock = threading.Lock()

    def check(self, chosen: DetectorRange | None) -> None:
        """Raises ``RangeNotApplicableError`` when a range is asked of a detector without one."""
        analyze_settings(self.settings, chosen)

    def analyzer(self, live: FaceAnalyzer, chosen: DetectorRange | None) -> FaceAnalyzer:
        """``live`` (the served model) looking with the offline detector for ``chosen``.

        Call from a worker thread: the first use of a range loads its model(s)."""
        with self._lock:
            if chosen not in self._keys:
                self._keys[chosen] = self._build(live, chosen)
            key = self._keys[chosen]
            built = None if key is None else self._built[key]
        return live if built is None else live.with_detector(*built)

    def _build(self, live: FaceAnalyzer, chosen: DetectorRange | None) -> str | None:
        """The key of ``chosen``'s detector, built unless an equal config already was."""
        config = analyze_settings(self.settings, chosen).detector
        root = self.settings.model_root
        if config == self.settings.detector and second_pass(config, self.settings.photo) is None:
            return None
        key = config.model_dump_json()
        if key not in self._built:  # the default and the range it stands for share one
            detector = (
                live.detector
                if config == self.settings.detector
                else ThreadLocalDetector(lambda: create_detector(config, root))
            )
            self._built[key] = (detector, stills_for(config, self.settings.photo, root))
        return key
