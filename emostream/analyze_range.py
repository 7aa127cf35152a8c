"""Which face detector offline analysis uses: ``emostream analyze`` and ``POST /v1/predict``.

One decision, in one place, so the CLI and the REST API never disagree (issue 23: the
endpoint used the live, close-range detector and found none of six faces the CLI found).
Photos and recordings are not live: the detector's ``far`` range (YuNet at full size up to
its pixel bound; BlazeFace's tiles) is worth its cost there, while live sessions keep
``detector.range`` (``near`` by default). Change the default here (``ANALYZE_RANGE``) and
both entry points follow.
"""

from __future__ import annotations

from enum import StrEnum

from emostream.settings import Settings


class DetectorRange(StrEnum):
    """How small the faces the detector looks for are (``detector.range``; see
    ``models/detectors/base.py``)."""

    near = "near"
    far = "far"
    auto = "auto"


#: Photos and recorded videos are not live: the thorough pass is worth its cost.
ANALYZE_RANGE = DetectorRange.far
#: A recording's frames per detector run. Live sessions run it on one frame in 5 at 15 fps,
#: three times a second; recordings are mostly 25-30 fps, so one in 10 keeps that cadence
#: (a cut or a face stepping in still calls it at once: the schedule's scene change).
#: Measured on woman2.mp4 (30 fps): 2.4 -> 1.9 ms per frame, a face in every frame both ways.
OFFLINE_DETECT_EVERY = 10


class RangeNotApplicableError(ValueError):
    """A range was asked of a detector that has none (Haar, another backend)."""


def analyze_settings(settings: Settings, chosen: DetectorRange | str | None = None) -> Settings:
    """The settings offline analysis runs with: range ``chosen`` if given, else
    ``EMOSTREAM_DETECTOR__RANGE`` if set, else ``ANALYZE_RANGE``.

    A detector without a range is left as configured; asking one for a range raises
    ``RangeNotApplicableError`` (a usage error for the CLI, a 422 for the API). A video's
    detector runs on one frame in ``OFFLINE_DETECT_EVERY`` unless
    ``EMOSTREAM_TRACKING__DETECT_EVERY`` says otherwise.
    """
    picked = DetectorRange(chosen) if chosen is not None else None
    detector = settings.detector
    tracking = settings.tracking
    if "detect_every" not in tracking.model_fields_set:
        tracking = tracking.model_copy(update={"detect_every": OFFLINE_DETECT_EVERY})
    settings = settings.model_copy(update={"tracking": tracking})
    if "range" not in type(detector).model_fields:
        if picked is not None:
            raise RangeNotApplicableError(
                f"range is for the yunet and blazeface detectors; the {detector.type} "
                "detector has none"
            )
        return settings
    if picked is None and "range" in detector.model_fields_set:
        return settings
    value = (picked or ANALYZE_RANGE).value
    return settings.model_copy(update={"detector": detector.model_copy(update={"range": value})})
