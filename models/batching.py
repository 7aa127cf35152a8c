"""The batching worker: take up to B jobs or wait at most T, run them as one batch.

One worker serves one analyzer (one modality); whichever session a job came from, it goes
into the same batch. The CPU work runs in one dedicated thread (a ``ThreadPoolExecutor``
of size 1), never on the event loop: ONNX Runtime and OpenCV release the GIL and use their
own threads, and one inference thread keeps batches in order while the loop keeps serving
signalling, media and results. Scoring, timing and counting are ``run_batch``'s, the same
function ``/v1/predict`` and ``emostream analyze`` call.

The analyzer is read from its ``ModelSlot`` once per batch, so a promoted version takes
over at the next batch and the batch in progress finishes on the version it started with.
A shadow candidate (``models/shadow.py``) scores after the batch is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from pydantic import BaseModel, Field

from emostream.broker.base import WorkerBroker
from emostream.fields import Unset
from emostream.models.serving import ModelSlot
from emostream.models.shadow import Shadow
from emostream.pipeline.analyzer import Analyzer, run_batch
from emostream.pipeline.jobs import Job
from emostream.pipeline.outcomes import Outcome
from emostream.supervise import Supervised, supervise

log = logging.getLogger(__name__)


class WorkerConfig(BaseModel):
    """``EMOSTREAM_WORKER__*``: batching (B and T), draining, and the worker's own identity."""

    max_batch: Annotated[int | None, Unset] = Field(
        default=None, ge=1, description="B: most frames per model call; unset = by provider"
    )
    max_batch_cpu: int = Field(default=16, ge=1, description="B on the CPU provider")
    max_batch_gpu: int = Field(default=64, ge=1, description="B on CUDA/TensorRT")
    max_wait_ms: float = Field(default=4.0, ge=0.0, description="T: wait for more after one")
    drain_timeout_s: float = Field(default=10.0, ge=0, description="SIGTERM: finish in-flight")
    name: str | None = Field(default=None, description="consumer name; default hostname-pid")
    metrics_host: str = Field(default="127.0.0.1", description="the worker's /metrics address")
    metrics_port: int = Field(
        default=9100, ge=0, le=65535, description="the worker's /metrics port; 0 = none"
    )

    def batch_for(self, provider: str) -> int:
        """B for this provider: a GPU wants far bigger batches than a CPU."""
        if self.max_batch is not None:
            return self.max_batch
        if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            return self.max_batch_gpu
        return self.max_batch_cpu


class BatchWorker:
    def __init__(
        self,
        broker: WorkerBroker,
        analyzer: Analyzer | ModelSlot[Any],
        config: WorkerConfig | None = None,
    ) -> None:
        self.broker = broker
        self.slot: ModelSlot[Any] = (
            analyzer if isinstance(analyzer, ModelSlot) else ModelSlot(analyzer)
        )
        first = self.slot.analyzer
        self.modality = first.modality
        self.config = config or WorkerConfig()
        self.max_batch = self.config.batch_for(first.provider)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{self.modality}-infer"
        )
        self._loop: Supervised | None = None
        self._draining = False
        self._busy = False

    @property
    def analyzer(self) -> Analyzer:
        """The analyzer the next batch runs on."""
        analyzer: Analyzer = self.slot.analyzer
        return analyzer

    def start(self) -> None:
        """Run the loop, supervised: if it ever raises it is restarted (and counted)."""
        self._loop = supervise(f"{self.modality}-worker", self.run)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The supervising task: it ends only when the loop returns (drained) or on stop."""
        return None if self._loop is None else self._loop.task

    @property
    def tasks(self) -> list[Supervised]:
        return [] if self._loop is None else [self._loop]

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop; with ``drain_s`` > 0 the batch in progress finishes and is published first.

        Jobs this worker has read but not started stay pending in the broker, where another
        worker claims them (Redis) or their session's end drops them (in-process).
        """
        task, self._draining = self.task, True
        if task is not None and drain_s > 0 and self._busy:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), drain_s)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._executor.shutdown(wait=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.config.max_wait_ms / 1000.0
        while not self._draining:
            jobs = await self.broker.take(self.modality, self.max_batch, wait_s)
            if not jobs:
                continue
            analyzer, shadow = self.slot.analyzer, self.slot.shadow  # once per batch
            if shadow is not None and not self.broker.payloads_outlive_publish:
                jobs = [dataclasses.replace(j, payload=j.payload.copy()) for j in jobs]
            self._busy = True
            try:
                outcomes = await loop.run_in_executor(self._executor, run_batch, analyzer, jobs)
                await self.broker.publish(outcomes)
            finally:
                self._busy = False
            if shadow is not None:
                await self._shadow(shadow, jobs, outcomes)

    async def _shadow(self, shadow: Shadow, jobs: Sequence[Job], outcomes: list[Outcome]) -> None:
        """The candidate's turn, after the clients got theirs; its failure is only logged."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, shadow.compare, jobs, outcomes)
        except Exception:
            log.exception("shadow %s failed on a batch of %d", shadow.model, len(jobs))
