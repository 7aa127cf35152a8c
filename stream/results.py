"""Per-session result handling: track ids, optional smoothing, the DESIGN face message.

Workers are stateless (any worker may take any frame), so the tracker lives with the
session on the ingest side. ``latency_ms`` runs from the start of the frame's decode
(``Result.created``) to the moment the message is built, just before it is sent.

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
from emostream.broker.base import Result
from emostream.models.tracker import IouTracker
from emostream.schema import Face, FaceMessage

#: Results a session keeps for its own latency percentiles (10 min at 15 fps, ~0.3 MB).
LATENCY_WINDOW = 9000


@dataclass
class FaceResults:
    session: str
    smoothing: float = 1.0  # EMA weight of the newest frame; 1 = raw scores
    tracker: IouTracker = field(init=False)
    dropped: dict[str, int] = field(default_factory=dict)
    classes: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def __post_init__(self) -> None:
        self.tracker = IouTracker(alpha=self.smoothing)

    def message(self, r: Result) -> FaceMessage | None:
        """The message to send for a result, or None for a dropped frame (counted)."""
        if r.dropped is not None:
            self.dropped[r.dropped.value] = self.dropped.get(r.dropped.value, 0) + 1
            return None
        faces: list[Face] = []
        if r.boxes and r.scores is not None:
            ids, scores = self.tracker.update(r.boxes, r.scores)
            assert scores is not None
            for box, tid, row in zip(r.boxes, ids, scores, strict=True):
                k = int(row.argmax())
                faces.append(
                    Face(
                        track_id=tid,
                        box=box,
                        scores={c: round(float(p), 5) for c, p in zip(r.classes, row, strict=True)},
                        label=r.classes[k],
                        confidence=round(float(row[k]), 5),
                    )
                )
        else:
            self.tracker.update([])
        latency = time.monotonic() - r.created
        metrics.STAGE_LATENCY.labels("end_to_end", r.modality).observe(latency)
        self.latencies.append(latency)
        self.classes.update(f.label for f in faces)
        return FaceMessage(
            session=self.session,
            seq=r.seq,
            pts=round(r.pts, 6),
            latency_ms=round(latency * 1000, 3),
            model=r.model or None,
            width=int(r.meta["width"]) if "width" in r.meta else None,
            height=int(r.meta["height"]) if "height" in r.meta else None,
            faces=faces,
        )

    def summary(self) -> dict[str, object]:
        """This session's figures: end-to-end latency percentiles, class counts, drops."""
        ms = np.array(self.latencies) * 1e3
        latency = (
            {
                "results": len(ms),
                **{f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
                "max": round(float(ms.max()), 1),
            }
            if len(ms)
            else None
        )
        return {"latency_ms": latency, "classes": dict(self.classes), "dropped": self.dropped}
