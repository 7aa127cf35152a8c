"""Prometheus metrics (names are part of the contract in docs/ARCHITECTURE.md; see docs/METRICS.md).

No per-session labels: label values are bounded (stage, modality, model, version, class,
reason), so cardinality stays flat however many sessions run.

Several processes (``serve --processes N``, ``metrics_processes``) export one page with the
same names and labels, and no ``pid`` label: counters and histograms are summed, and each
gauge says how its processes' values merge (``multiprocess_mode``, ignored in one process).
All are ``live*``: an exited process's gauges leave the page (``process_died``).

- ``livesum`` where each process counts its own share of a whole: sessions open, jobs
  queued in the queues it owns, asyncio tasks.
- ``livemax`` where every process reports the same fact or a flag: roles analysed, model
  info and serving, worker info (one series per worker anyway), and drift, whose windows
  are per process (the worst one, as the dashboards' ``max by`` already take it). Series
  that are removed (``metrics_sampled.remove``) are all on ``livemax`` gauges.
- ``livemin`` for ``broker_up``: the server reaches its broker only if every process does.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from emostream.metrics_processes import child_env as child_env
from emostream.metrics_processes import exposition as exposition
from emostream.metrics_processes import multiprocess_dir as multiprocess_dir
from emostream.metrics_processes import new_dir as new_dir
from emostream.metrics_processes import process_died as process_died
from emostream.metrics_processes import registry as registry
from emostream.metrics_processes import remove_dir as remove_dir
from emostream.metrics_processes import serve as serve
from emostream.metrics_sampled import remove as remove
from emostream.metrics_sampled import set_function as set_function

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
FACE_FRAMES = Counter(
    "emostream_face_frames_total",
    "Face frames by where their boxes came from: followed (optical flow), or the reason "
    "the detector ran (start, gap, schedule, scene, uncertain, stateless)",
    ["boxes"],
)
VOICE_WINDOWS = Counter(
    "emostream_voice_windows_total",
    "Audio windows cut from live tracks; speech ones go to the voice model, silent ones not",
    ["speech"],
)
#: the transports that feed sessions (``stream/transports/``; ``file``: ``POST /v1/analyze``)
TRANSPORTS = ("webrtc", "audiohook", "twilio", "local")
SESSIONS_OPENED = Counter(
    "emostream_sessions_opened_total",
    "Sessions opened, by the transport that feeds them (webrtc, audiohook, twilio, local)",
    ["transport"],
)
PROTOCOL_ERRORS = Counter(
    "emostream_protocol_errors_total",
    "Messages or connections a transport refused (bad JSON, wrong sequence, bad signature, "
    "...), by transport and reason",
    ["transport", "reason"],
)
CALLS_ENDED = Counter(
    "emostream_calls_ended_total",
    "Sessions ended (calls), by transport: the denominator of the call-level figures",
    ["transport"],
)
CALL_CLASS_SHARE = Histogram(
    "emostream_call_class_share",
    "Per ended call and analysed role with speech: the share of its speech windows in each "
    "voice class (one observation per class, 0 included), so the share of calls whose "
    "customer was angry for more than 30 % of their speech is 1 - bucket(le=0.3) / count",
    ["role", "label"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
)
ROLE_ANALYSED = Gauge(
    "emostream_role_analysed",
    "1 for each speaker role this server analyses (calls.analyse_roles), 0 for the others: "
    "the EU workplace policy in force",
    ["role"],
    multiprocess_mode="livemax",
)
WEBHOOK_DELIVERIES = Counter(
    "emostream_webhook_deliveries_total",
    "Call summaries POSTed to calls.webhook_url: delivered, or an attempt that failed "
    "(retried with backoff), or given up",
    ["outcome"],
)
PREDICTIONS = Counter(
    "emostream_predictions_total",
    "Predicted top class per face or voice window",
    ["model", "version", "modality", "label"],
)
UNSURE_RESULTS = Counter(
    "emostream_unsure_results_total",
    "Faces and voice windows sent with unsure: true (top probability under "
    "results.unsure_below): their label is a guess",
    ["modality"],
)
REQUESTS_REJECTED = Counter(
    "emostream_requests_rejected_total",
    "API requests refused with a 4xx/5xx, by error code",
    ["endpoint", "error"],
)
#: how a session request that reached a child not holding it went (``emostream/local/``)
ROUTED_OUTCOMES = ("relayed", "unreachable")
REQUESTS_ROUTED = Counter(
    "emostream_requests_routed_total",
    "Session requests relayed to the child process holding the session (serve --processes): "
    "relayed (the owner answered) or unreachable (it did not; answered here)",
    ["outcome"],
)
MODEL_INFO = Gauge(
    "emostream_model_info",
    "1 for each model version this process serves",
    ["model", "version", "modality", "provider"],
    multiprocess_mode="livemax",
)
MODEL_SERVING = Gauge(
    "emostream_model_serving",
    "1 for the version of each model this process serves now, 0 for one it served before",
    ["model", "version", "modality"],
    multiprocess_mode="livemax",
)
MODEL_LOADS = Counter(
    "emostream_model_loads_total",
    "Model versions a running process tried to switch to or shadow: loaded, or refused "
    "(failed to load or to pass the check; the old version keeps serving)",
    ["model", "version", "result"],
)
# Shadow evaluation (models/shadow.py): a candidate scored on a sample of production's faces.
SHADOW_FACES = Counter(
    "emostream_shadow_faces_total",
    "Faces the shadow candidate scored beside production",
    ["model", "version"],
)
SHADOW_AGREEMENT = Counter(
    "emostream_shadow_agreement_total",
    "Shadow-scored faces whose top class is production's top class",
    ["model", "version"],
)
SHADOW_PREDICTIONS = Counter(
    "emostream_shadow_predictions_total",
    "The shadow candidate's top class per face it scored (never sent to clients)",
    ["model", "version", "class"],
)
QUEUE_DEPTH = Gauge(
    "emostream_queue_depth",
    "Jobs queued for inference and not yet taken by a worker",
    ["modality"],
    multiprocess_mode="livesum",
)
ACTIVE_SESSIONS = Gauge(
    "emostream_active_sessions",
    "WebRTC sessions open on this ingest node",
    multiprocess_mode="livesum",
)
ASYNCIO_TASKS = Gauge(
    "emostream_asyncio_tasks",
    "asyncio tasks alive in this process's event loop when /metrics was scraped",
    multiprocess_mode="livesum",
)


def count_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Report ``loop``'s live tasks at each scrape, from whichever thread serves /metrics or
    samples it (the soak bench's leak gauge; ``all_tasks`` retries if the set changes
    meanwhile)."""
    set_function(ASYNCIO_TASKS, lambda: len(asyncio.all_tasks(loop)))


BROKER_UP = Gauge(
    "emostream_broker_up",
    "1 while this process reaches its broker (always 1 for the in-process one)",
    multiprocess_mode="livemin",
)
JOBS_RECLAIMED = Counter(
    "emostream_jobs_reclaimed_total",
    "Jobs a worker took over from another that stopped answering (XAUTOCLAIM)",
    ["modality"],
)
TASK_RESTARTS = Counter(
    "emostream_task_restarts_total",
    "Background tasks (results reader, worker loop, session reaper) restarted after dying",
    ["task"],
)
RESULTS_MALFORMED = Counter(
    "emostream_results_malformed_total",
    "Entries on this ingest node's results stream that it could not read (skipped)",
)
WORKER_INFO = Gauge(
    "emostream_worker_info",
    "1 per inference worker process; its consumer name, provider and batch settings",
    ["worker", "provider", "max_batch"],
    multiprocess_mode="livemax",
)


def _per_model(name: str, documentation: str) -> Gauge:
    """A gauge with one series per served model version and modality."""
    return Gauge(name, documentation, ["model", "version", "modality"], multiprocess_mode="livemax")


# Class drift (models/drift.py): computed at scrape time over this process's own window.
DRIFT_PSI = _per_model(
    "emostream_drift_psi",
    "Population stability index of the recent predictions vs the model card's reference",
)
DRIFT_JS = _per_model(
    "emostream_drift_js_distance",
    "Jensen-Shannon distance (base 2) of the recent predictions vs the card's reference",
)
DRIFT_WINDOW_SAMPLES = _per_model(
    "emostream_drift_window_samples", "Predictions currently in the drift window"
)
DRIFT_REFERENCE_MISSING = _per_model(
    "emostream_drift_reference_missing",
    "1 when the model card has no reference_distribution (drift not measured), else 0",
)

#: Drop reasons each role can count (the /v1/predict media error codes come on demand).
INGEST_DROPS = ("superseded", "session_closed", "unavailable", "lost", "out_of_order")
WORKER_DROPS = ("deadline", "error", "malformed")


def initialise(role: Literal["ingest", "worker", "all-in-one"], modality: str = "face") -> None:
    """Create this role's labelled series at zero, before anything happens.

    A counter that has never been incremented does not exist for Prometheus: ``rate()`` of
    it returns nothing instead of 0, panels say "No data" and ratios go missing. So every
    series a role owns is exported from the start (Prometheus' "initialise your metrics").
    """
    if role != "worker":
        FRAMES_IN.labels(modality)
        for reason in INGEST_DROPS:
            FRAMES_DROPPED.labels(modality, reason)
        for stage in ("decode", "end_to_end"):
            STAGE_LATENCY.labels(stage, modality)
    if role != "ingest":
        FRAMES_PROCESSED.labels(modality)
        for reason in WORKER_DROPS:
            FRAMES_DROPPED.labels(modality, reason)
        for stage in ("queue", "inference"):
            STAGE_LATENCY.labels(stage, modality)
        BATCH_SIZE.labels(modality)
        JOBS_RECLAIMED.labels(modality)
    QUEUE_DEPTH.labels(modality)
    if role != "worker":
        for transport in TRANSPORTS:
            CALLS_ENDED.labels(transport)
            SESSIONS_OPENED.labels(transport)
        for outcome in ("delivered", "failed", "given_up"):
            WEBHOOK_DELIVERIES.labels(outcome)


def exported_names() -> set[str]:
    """Every metric name this package exports (as Prometheus sees it, ``_total`` included)."""
    names: set[str] = set()
    for value in globals().values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.add(family.name)
                if family.type == "counter":
                    names.add(family.name + "_total")
    return names


LOCAL_INFERENCE_READY = Gauge(
    "emostream_local_inference_ready",
    "Inference processes with their models loaded (serve --processes > 1)",
    multiprocess_mode="livemax",  # only the parent sets it
)
LOCAL_RESTARTS = Counter(
    "emostream_local_restarts_total",
    "Child processes of serve --processes that ended and were started again",
    ["role"],
)
LOCAL_ARENA_FULL = Counter(
    "emostream_local_arena_full_total",
    "Payloads an ingest process could not place in shared memory (dropped as overload)",
    ["modality"],
)
