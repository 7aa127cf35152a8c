"""What a session makes of its broker events: messages to send, and its own summary.

Workers are stateless (any worker may take any frame), so the tracker lives with the
session on the ingest side. ``latency_ms`` runs from the start of the frame's decode
(``Job.created``) to the moment the message is built, just before it is sent.

Prometheus has no per-session labels (cardinality), so each session keeps its own small
summary here (latency percentiles over its recent results, its class counts): served by
``GET /v1/sessions/{id}`` while it runs and written to the log when it ends.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from emostream import metrics
from emostream.models.face_tracking.ids import IouTracker
from emostream.pipeline.jobs import DropReason
from emostream.pipeline.messages import face_message, voice_message
from emostream.pipeline.outcomes import BrokerNotice, Dropped, Failed, SessionEvent, VoiceScores
from emostream.schema import ErrorMessage, FaceMessage, VoiceMessage

#: Results a session keeps for its own latency percentiles (10 min at 15 fps, ~0.3 MB).
LATENCY_WINDOW = 9000


@dataclass
class SessionView:
    session: str
    smoothing: float = 1.0  # EMA weight of the newest frame; 1 = raw scores
    tracker: IouTracker = field(init=False)
    dropped: dict[str, int] = field(default_factory=dict)
    classes: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    voice_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    voice_classes: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.tracker = IouTracker(alpha=self.smoothing)

    def message(self, event: SessionEvent) -> FaceMessage | VoiceMessage | ErrorMessage | None:
        """The message to send for an event, or None for a dropped job (counted)."""
        if isinstance(event, BrokerNotice):
            return ErrorMessage(session=self.session, code=event.code, detail=event.detail)
        if isinstance(event, Dropped | Failed):
            reason = event.reason if isinstance(event, Dropped) else DropReason.error
            self.dropped[reason.value] = self.dropped.get(reason.value, 0) + 1
            return None
        latency = time.monotonic() - event.job.created
        metrics.STAGE_LATENCY.labels("end_to_end", event.job.modality).observe(latency)
        if isinstance(event.result, VoiceScores):
            self.voice_latencies.append(latency)
            voice = voice_message(event, latency_s=latency, session=self.session)
            self.voice_classes[voice.label or ""] += 1
            return voice
        self.latencies.append(latency)
        msg = face_message(event, latency_s=latency, tracker=self.tracker, session=self.session)
        self.classes.update(f.label for f in msg.faces)
        return msg

    def summary(self) -> dict[str, object]:
        """This session's figures: end-to-end latency percentiles, class counts, drops
        (``dropped`` counts both modalities); those of speech windows under ``voice``."""
        return {
            "latency_ms": _percentiles(self.latencies),
            "classes": dict(self.classes),
            "dropped": self.dropped,
            "voice": {
                "latency_ms": _percentiles(self.voice_latencies),
                "classes": dict(self.voice_classes),
            },
        }


def _percentiles(seconds: deque[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    ms = np.array(seconds) * 1e3
    return {
        "results": len(ms),
        **{f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
        "max": round(float(ms.max()), 1),
    }
