"""What a session makes of its broker events: messages to send, and its own summary.

Workers are stateless (any worker may take any frame), so what follows a session across
results lives here, on the ingest side, one ``ModalityView`` per registered modality (the
face view keeps the track ids). ``latency_ms`` runs from the start of the job's decode
(``Job.created``) to the moment the message is built, just before it is sent.

Prometheus has no per-session labels (cardinality), so each session keeps its own small
summary here (latency percentiles over its recent results, its class counts, its drops):
served by ``GET /v1/sessions/{id}`` while it runs and written to the log when it ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from emostream import metrics
from emostream.modalities import ModalityView, registered
from emostream.modalities.base import Message
from emostream.pipeline.jobs import DropReason
from emostream.pipeline.outcomes import BrokerNotice, Dropped, Failed, SessionEvent
from emostream.pipeline.results_config import ResultsConfig
from emostream.schema import ErrorMessage


@dataclass
class SessionView:
    session: str
    smoothing: float = 1.0  # EMA weight of the newest frame; 1 = raw scores
    unsure_below: float = field(default_factory=lambda: ResultsConfig().unsure_below)
    dropped: dict[str, int] = field(default_factory=dict)
    views: dict[str, ModalityView] = field(init=False)

    def __post_init__(self) -> None:
        self.views = {
            m.name: m.view(self.session, self.smoothing, self.unsure_below) for m in registered()
        }

    def message(self, event: SessionEvent) -> Message | ErrorMessage | None:
        """The message to send for an event, or None for a dropped job (counted)."""
        if isinstance(event, BrokerNotice):
            return ErrorMessage(session=self.session, code=event.code, detail=event.detail)
        if isinstance(event, Dropped | Failed):
            reason = event.reason if isinstance(event, Dropped) else DropReason.error
            self.dropped[reason.value] = self.dropped.get(reason.value, 0) + 1
            return None
        latency = time.monotonic() - event.job.created
        metrics.STAGE_LATENCY.labels("end_to_end", event.job.modality).observe(latency)
        return self.views[event.job.modality].message(event, latency)

    def summary(self) -> dict[str, object]:
        """This session's figures: end-to-end latency percentiles and class counts per
        modality (the first modality's at the top level, the others under their
        ``summary_key``), and its drops of every modality (``dropped``)."""
        out: dict[str, object] = {}
        for m in registered():
            figures = self.views[m.name].summary()
            if m.summary_key is None:
                out.update(figures)
            else:
                out[m.summary_key] = figures
        out["dropped"] = self.dropped
        return out
