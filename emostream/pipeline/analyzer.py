"""The one inference path: an analyzer per modality, and ``run_batch`` around it.

The batching worker, ``/v1/predict`` and ``emostream analyze`` all call ``run_batch``, so a
frame is scored, timed and counted the same way whichever door it came in by, and every
inference metric is recorded here and nowhere else. Adding a modality is adding an
analyzer (``run(jobs) -> outcomes``); the worker does not change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from emostream import metrics
from emostream.pipeline.jobs import DropReason, Job, Modality
from emostream.pipeline.outcomes import Outcome, Scored, Scores, drop, fail

log = logging.getLogger(__name__)


class Tally(Protocol):
    """Counts a model's predictions (``emostream_predictions_total``) and feeds its drift."""

    def observe(self, scored: Scored[Scores]) -> None: ...


class Analyzer(Protocol):
    """Scores a batch of one modality's jobs with one model version."""

    @property
    def modality(self) -> Modality: ...

    @property
    def model(self) -> str:
        """``name/version`` of the model that scores."""

    @property
    def provider(self) -> str:
        """The ONNX Runtime provider it runs on (for logs, metrics and batch sizes)."""

    @property
    def tally(self) -> Tally: ...

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """One outcome per job, in order. Runs in the inference thread, never the loop."""


def run_batch(analyzer: Analyzer, jobs: Sequence[Job]) -> list[Outcome]:
    """Drop jobs past their deadline, run the rest as one batch, record every metric.

    An analyzer that raises fails its whole batch (each job told, counted ``error``)
    rather than the worker: one bad batch never stops the next.
    """
    started = time.monotonic()
    modality = analyzer.modality
    out: dict[int, Outcome] = {}
    live: list[int] = []
    for i, job in enumerate(jobs):
        if job.deadline < started:
            out[i] = drop(job, DropReason.deadline)
        else:
            live.append(i)
    if live:
        try:
            ran = analyzer.run([jobs[i] for i in live])
        except Exception:
            log.exception("%s batch of %d failed", modality, len(live))
            ran = [fail(jobs[i], "inference failed") for i in live]
        done = time.monotonic()
        metrics.BATCH_SIZE.labels(modality).observe(len(live))
        metrics.STAGE_LATENCY.labels("inference", modality).observe(done - started)
        for i, outcome in zip(live, ran, strict=True):
            out[i] = outcome
            if isinstance(outcome, Scored):
                metrics.STAGE_LATENCY.labels("queue", modality).observe(
                    max(0.0, started - jobs[i].enqueued)
                )
                metrics.FRAMES_PROCESSED.labels(modality).inc()
                analyzer.tally.observe(outcome)
    return [out[i] for i in range(len(jobs))]
