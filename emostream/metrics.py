"""Prometheus metrics (names are part of DESIGN.md's contract; see docs/METRICS.md).

No per-session labels: label values are bounded (stage, modality, model, version, class,
reason), so cardinality stays flat however many sessions run.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: 1 ms to 200 ms resolved finely, then a tail for overload.
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
    5.0,
)

STAGE_LATENCY = Histogram(
    "emostream_stage_latency_seconds",
    "Time spent per pipeline stage (decode, queue, inference, end_to_end)",
    ["stage", "modality"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "emostream_batch_size",
    "Items per model call",
    ["modality"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
FRAMES_IN = Counter("emostream_frames_in_total", "Frames/windows received", ["modality"])
FRAMES_PROCESSED = Counter(
    "emostream_frames_processed_total", "Frames/windows that produced a result", ["modality"]
)
FRAMES_DROPPED = Counter(
    "emostream_frames_dropped_total",
    "Frames/windows not processed, by reason",
    ["modality", "reason"],
)
PREDICTIONS = Counter(
    "emostream_predictions_total",
    "Predicted top class per face or voice window",
    ["model", "version", "modality", "label"],
)
REQUESTS_REJECTED = Counter(
    "emostream_requests_rejected_total",
    "API requests refused with a 4xx/5xx, by error code",
    ["endpoint", "error"],
)
MODEL_INFO = Gauge(
    "emostream_model_info",
    "1 for each model version this process serves",
    ["model", "version", "modality", "provider"],
)
QUEUE_DEPTH = Gauge(
    "emostream_queue_depth",
    "Jobs queued for inference and not yet taken by a worker",
    ["modality"],
)
ACTIVE_SESSIONS = Gauge("emostream_active_sessions", "WebRTC sessions open on this ingest node")
BROKER_UP = Gauge(
    "emostream_broker_up",
    "1 while this process reaches its broker (always 1 for the in-process one)",
)
JOBS_RECLAIMED = Counter(
    "emostream_jobs_reclaimed_total",
    "Jobs a worker took over from another that stopped answering (XAUTOCLAIM)",
    ["modality"],
)
WORKER_INFO = Gauge(
    "emostream_worker_info",
    "1 per inference worker process; its consumer name, provider and batch settings",
    ["worker", "provider", "max_batch"],
)
