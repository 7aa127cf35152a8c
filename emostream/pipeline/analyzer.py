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


def _run(analyzer: Analyzer, jobs: Sequence[Job]) -> list[Outcome]:
    """``analyzer.run``, held to its contract: one outcome per job, or it raises."""
    ran = analyzer.run(jobs)
    if len(ran) != len(jobs):
        raise RuntimeError(f"{len(ran)} outcomes for {len(jobs)} jobs")
    return ran


def _alone(analyzer: Analyzer, job: Job) -> Outcome:
    try:
        (outcome,) = _run(analyzer, [job])
    except Exception as exc:
        log.warning("%s job %s/%d failed: %r", analyzer.modality, job.session, job.seq, exc)
        return fail(job, f"inference failed: {type(exc).__name__}")
    return outcome


def run_batch(analyzer: Analyzer, jobs: Sequence[Job]) -> list[Outcome]:
    """Drop jobs past their deadline, run the rest as one batch, record every metric.

    A job that fails fails alone: when the analyzer raises on a batch, each of its jobs is
    run again by itself, so only the job(s) that make it raise are ``Failed`` (counted
    ``error``) and the other sessions' frames of that batch are still scored. Nothing an
    analyzer raises leaves this function: one bad job never stops the worker.
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
        batch = [jobs[i] for i in live]
        try:
            ran = _run(analyzer, batch)
        except Exception:
            log.exception("%s batch of %d failed; running its jobs one by one", modality, len(live))
            ran = [_alone(analyzer, job) for job in batch]
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
