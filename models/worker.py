"""The batching face worker: take up to B jobs or wait at most T, run them as one batch.

Detection runs per frame, then one classifier call scores every face of every frame in the
batch, whichever session it came from. The CPU work runs in one dedicated thread (a
``ThreadPoolExecutor`` of size 1), never on the event loop: ONNX Runtime and OpenCV release
the GIL and use their own threads, and one inference thread keeps batches in order while
the loop keeps serving signalling, media and results. A job that fails (a bad payload)
becomes an error result for its session alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field

from emostream import metrics
from emostream.broker.base import Broker, DropReason, Job, Result, count_drop
from emostream.fields import Unset
from emostream.models.detectors.base import Box
from emostream.models.service import FaceService

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


def _source_box(box: Box, scale: float) -> Box:
    """Boxes are found on the downscaled frame; messages use source-frame pixels."""
    if scale == 1.0:
        return box
    return (
        round(box[0] / scale),
        round(box[1] / scale),
        round(box[2] / scale),
        round(box[3] / scale),
    )


class FaceWorker:
    def __init__(
        self, broker: Broker, service: FaceService, config: WorkerConfig | None = None
    ) -> None:
        self.broker = broker
        self.service = service
        self.config = config or WorkerConfig()
        self.max_batch = self.config.batch_for(service.provider)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-infer")
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._busy = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="face-worker")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop; with ``drain_s`` > 0 the batch in progress finishes and is published first.

        Jobs this worker has read but not started stay pending in the broker, where another
        worker claims them (Redis) or their session's end drops them (in-process).
        """
        task, self._draining = self._task, True
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
        cfg = self.config
        while not self._draining:
            jobs = await self.broker.take("face", self.max_batch, cfg.max_wait_ms / 1000.0)
            if not jobs:
                continue
            self._busy = True
            try:
                results = await loop.run_in_executor(self._executor, self.infer, jobs)
            except Exception:  # never let one batch kill the worker
                log.exception("face batch of %d failed", len(jobs))
                results = [self._failed(j, "inference failed") for j in jobs]
            try:
                await self.broker.publish(results)
            finally:
                self._busy = False

    def _failed(self, job: Job, why: str) -> Result:
        r = count_drop(job, DropReason.error)
        r.error = why
        return r

    def infer(self, jobs: list[Job]) -> list[Result]:
        """Detect per frame, classify all faces in one call (runs in the inference thread)."""
        started = time.monotonic()
        live: list[tuple[int, Job]] = []
        boxes: list[list[Box]] = []
        out: dict[int, Result] = {}
        for i, job in enumerate(jobs):
            if job.deadline < started:
                out[i] = count_drop(job, DropReason.deadline)
                continue
            frame = job.payload
            if frame.ndim not in (2, 3) or frame.size == 0 or frame.dtype != np.uint8:
                out[i] = self._failed(job, f"bad frame {frame.shape} {frame.dtype}")
                continue
            try:
                boxes.append(self.service.analyzer.detect(frame))
            except Exception as exc:  # a frame the detector cannot take
                out[i] = self._failed(job, f"detection failed: {exc}")
                continue
            live.append((i, job))
        t_det = time.monotonic()
        analyzer = self.service.analyzer
        faces = analyzer.classify([j.payload for _, j in live], boxes) if live else []
        done = time.monotonic()
        n_faces = sum(len(b) for b in boxes)
        metrics.BATCH_SIZE.labels("face").observe(len(live))
        metrics.STAGE_LATENCY.labels("inference", "face").observe(done - started)
        card = self.service.card
        for (i, job), frame_faces in zip(live, faces, strict=True):
            metrics.STAGE_LATENCY.labels("queue", "face").observe(started - job.enqueued)
            metrics.FRAMES_PROCESSED.labels("face").inc()
            scale = job.meta.get("scale", 1.0)
            self.service.count_predictions(frame_faces.scores)
            out[i] = Result.of(
                job,
                model=card.ref,
                boxes=[_source_box(b, scale) for b in frame_faces.boxes],
                scores=frame_faces.scores,
                classes=list(card.classes),
                queue_s=started - job.enqueued,
                inference_s=done - started,
            )
        log.debug(
            "batch: %d frames, %d faces, detect %.1f ms, classify %.1f ms",
            len(live),
            n_faces,
            (t_det - started) * 1e3,
            (done - t_det) * 1e3,
        )
        return [out[i] for i in range(len(jobs))]
