"""The HTTP API of ``emostream serve`` (FastAPI): signalling, predict, health, metrics.

Sessions' own routes (SSE events, status, end) come from ``session_routes``, WebRTC
signalling (``/whip``, ``/v1/offer``) from ``transports/webrtc/signalling``; the demo page
from ``static/``. ``/v1/predict`` takes the same inference path as the real-time worker
(``run_batch``), so it scores and counts a frame exactly as a session would. CPU work
(decode, detect, classify) runs in the REST threads (``rest_pool``: few, and niced below
live sessions), so the event loop keeps answering health checks and sessions while a big
image is processed, and within the decode budget (``decode_budget``), reserved from the
image's header before a pixel is decoded.

Who may call what is ``stream.auth`` (docs/SECURITY.md): with API tokens set, ``/v1/predict``
and the OpenAPI schema need one and the interactive docs (``/docs``, ``/redoc``) are off, since
a browser cannot send a bearer token to them; ``/``, ``/static``, ``/healthz`` and ``/readyz``
stay open (they carry no data); ``/metrics`` takes its own token, or moves to its own
listener (``server.metrics_port``) and off the main port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from emostream import __version__, metrics
from emostream.analyze_range import DetectorRange, RangeNotApplicableError
from emostream.broker.base import IngestBroker
from emostream.broker.factory import make_ingest
from emostream.broker.memory import MemoryBroker
from emostream.modalities import Service, registered
from emostream.models.batching import BatchWorker
from emostream.models.face import FaceAnalyzer
from emostream.models.repository import ModelRepository
from emostream.models.serving import ModelSlot
from emostream.models.watch import ModelWatcher
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.messages import face_message
from emostream.pipeline.outcomes import Failed, Scored
from emostream.schema import FaceMessage
from emostream.settings import Settings
from emostream.stream import logs, recorded, session_routes
from emostream.stream.auth import SESSION_TOKEN_HEADER, Guard
from emostream.stream.body import UploadBudget, image_bytes
from emostream.stream.calls_config import ROLES
from emostream.stream.decode_budget import MB, DecodeBudget, LocalLedger
from emostream.stream.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    unexpected_error_handler,
    validation_handler,
)
from emostream.stream.media import MediaError, decode_bytes, decode_opened, open_image
from emostream.stream.predict_detectors import PredictDetectors
from emostream.stream.query import strict_query
from emostream.stream.rest_pool import RestPool
from emostream.stream.session_manager import SessionManager
from emostream.stream.transports.audiohook import route as audiohook
from emostream.stream.transports.twilio import stream as twilio_stream
from emostream.stream.transports.webrtc import signalling
from emostream.supervise import readiness

log = logging.getLogger(__name__)


class AppState:
    """What the app serves: a ``Service`` per registered modality (its analyzer and the
    slot a promotion swaps, or why it has none), the broker, the in-process workers and
    the model watchers, and the sessions."""

    def __init__(self, settings: Settings, broker: IngestBroker | None = None) -> None:
        """``broker``: an ingest broker made elsewhere (an ingest process of ``serve
        --processes``); by default the settings choose (``memory`` or Redis)."""
        self.settings = settings
        self._given_broker = broker
        self.services: dict[str, Service] = {}
        self.load_error: str | None = None  # why a required modality (faces) is missing
        limits = settings.limits
        #: where /v1/predict and /v1/analyze work: few threads, below sessions' priority
        self.rest = RestPool(limits.predict_concurrency, limits.rest_nice)
        #: what they may decode at once, with its bounded queue
        self.decode = DecodeBudget(
            LocalLedger(limits.decode_budget_mb * MB), limits.decode_queue, limits.decode_wait_s
        )
        self.seq = 0
        self.broker: IngestBroker | None = None
        self.workers: list[BatchWorker] = []
        self.watchers: list[ModelWatcher] = []
        self.sessions: SessionManager | None = None
        self.predict_detectors = PredictDetectors(settings)

    @property
    def face(self) -> FaceAnalyzer | None:
        """The face analyzer serving now, for ``/v1/predict`` (read once per request: a
        swap takes the next one)."""
        service = self.services.get("face")
        if service is None:
            return None
        analyzer = service.analyzer if service.slot is None else service.slot.analyzer
        return analyzer if isinstance(analyzer, FaceAnalyzer) else None

    @face.setter
    def face(self, analyzer: FaceAnalyzer | None) -> None:
        self.services["face"] = Service(analyzer)

    @property
    def ready_to_serve(self) -> bool:
        """Every required modality has its analyzer."""
        return all(
            (svc := self.services.get(m.name)) is not None and svc.analyzer is not None
            for m in registered()
            if m.required
        )

    async def start_realtime(self) -> None:
        """The broker, the session manager, a model watcher per served modality and, with
        ``memory``, a worker per served modality in this process.

        With a Redis broker the batching workers are separate processes (``emostream
        worker``); this node only ingests, routes results and answers REST predictions,
        so it follows promotions (for /v1/predict) but runs no shadow.
        """
        if not self.ready_to_serve:
            return
        s = self.settings
        for speaker in ROLES:
            metrics.ROLE_ANALYSED.labels(speaker).set(1 if s.calls.analysed(speaker) else 0)
        voice = self.services.get("voice")
        for label in getattr(voice.analyzer if voice else None, "classes", ()):
            for speaker in s.calls.analyse_roles:  # each call's class shares start at zero
                metrics.CALL_CLASS_SHARE.labels(speaker, label)
        if s.calls.analysed("agent"):
            log.warning(
                "calls.analyse_roles includes 'agent': emotion recognition of workers is "
                "prohibited in the EU (AI Act, Regulation 2024/1689, Art. 5(1)(f)) but for "
                "medical or safety reasons; docs/RESPONSIBLE-USE.md"
            )
        embedded: MemoryBroker | None = None
        if self._given_broker is not None:
            self.broker = self._given_broker
        elif s.broker.is_redis:
            self.broker = make_ingest(s)
        else:  # one in-process broker plays both roles: sessions submit, our workers take
            self.broker = embedded = MemoryBroker(s.broker)
        await self.broker.start()
        role: Literal["ingest", "all-in-one"] = "all-in-one" if embedded else "ingest"
        repo = ModelRepository(s.model_root)
        for modality in registered():
            service = self.services.get(modality.name)
            if service is None or service.analyzer is None:
                continue
            service.slot = slot = ModelSlot(service.analyzer)
            metrics.initialise(role, modality.name)
            if embedded is not None:
                worker = BatchWorker(embedded, slot, s.worker)
                info = ("in-process", slot.analyzer.provider, str(worker.max_batch))
                metrics.WORKER_INFO.labels(*info).set(1)
                self.workers.append(worker)
                worker.start()
            config = modality.model_config(s)
            watcher = ModelWatcher(slot, repo, config, s.runner, s.drift, shadow=bool(embedded))
            self.watchers.append(watcher)
            watcher.start()
        self.sessions = SessionManager(self.broker, s.session, self.services, s.calls, s.results)
        self.sessions.start()

    async def stop_realtime(self) -> None:
        for watcher in self.watchers:
            await watcher.stop()
        if self.sessions is not None:
            await self.sessions.close()
        for worker in self.workers:
            await worker.stop()
        if self.broker is not None:
            await self.broker.close()

    def load(self) -> None:
        """Every modality's service; a missing optional model leaves the others serving."""
        s = self.settings
        for modality in registered():
            try:
                service = modality.load(s, ingest=True)
            except (LookupError, ValueError, OSError) as exc:
                service = Service(unavailable=str(exc))
                if modality.required:
                    self.load_error = str(exc)
                log.error("%s model not loaded: %s", modality.name, exc)
            else:
                if service.analyzer is not None:
                    analyzer = service.analyzer
                    log.info("serving %s on %s", analyzer.model, analyzer.provider)
            self.services[modality.name] = service

    def models_status(self) -> dict[str, object]:
        """``/readyz``'s ``models``: each modality's own entries."""
        out: dict[str, object] = {}
        for modality in registered():
            service = self.services.get(modality.name) or Service(unavailable="not loaded")
            out.update(modality.ready(service))
        return out


def create_app(settings: Settings | None = None, state: AppState | None = None) -> FastAPI:
    state = state or AppState(settings or Settings())
    settings = state.settings
    server = settings.server
    guard = Guard(server)

    def guard_caller(request: Request) -> None:
        """As a dependency, so the token is checked before the query is validated."""
        guard.caller(request)

    logs.install()  # no token in the access log, whoever starts uvicorn

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.install()
        metrics.count_tasks(asyncio.get_running_loop())
        listener = None
        if server.metrics_port:  # Prometheus' own server; /metrics is then not on our port
            listener, _ = metrics.serve(server.metrics_port, server.metrics_host)
        try:
            if not state.services and state.load_error is None:
                await anyio.to_thread.run_sync(state.load)
            await state.start_realtime()
            try:
                yield
            finally:
                await state.stop_realtime()
        finally:
            if listener is not None:
                listener.shutdown()
                listener.server_close()

    docs = not guard.closed  # a browser cannot send a bearer token to /docs or /redoc
    app = FastAPI(
        title="emostream",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        dependencies=[Depends(strict_query)],  # an unknown query parameter is a 422
    )
    app.state.emostream = state
    app.state.uploads = UploadBudget(state.settings.limits.max_upload_bytes_in_flight)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    if server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Location", SESSION_TOKEN_HEADER],
        )
    app.include_router(session_routes.router(settings, lambda: state.sessions))
    app.include_router(signalling.router(settings, lambda: state.sessions))
    app.include_router(recorded.router(state))  # POST /v1/analyze
    app.include_router(twilio_stream.router(settings, lambda: state.sessions))  # /v1/twilio
    app.include_router(audiohook.router(settings, lambda: state.sessions))  # GET /v1/audiohook
    static = Path(__file__).parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        """The browser demo: camera to /v1/offer, results on the `emotions` data channel."""
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers; says nothing about models (that is /readyz)."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not state.ready_to_serve:
            return JSONResponse(
                {"ready": False, "reason": state.load_error or "models are loading"}, 503
            )
        broker = state.broker
        if broker is not None and not await broker.healthy():
            return JSONResponse({"ready": False, "reason": broker.problem or "broker down"}, 503)
        owners = [broker, state.sessions, *state.workers, *state.watchers]
        problem, tasks = readiness(t for o in owners if o is not None for t in o.tasks)
        if problem is not None:
            return JSONResponse({"ready": False, "reason": problem, "tasks": tasks}, 503)
        return JSONResponse(
            {
                "ready": True,
                "broker": state.settings.broker.redacted_url,
                **(broker.details if broker is not None else {}),
                "models": state.models_status(),
                "calls": state.settings.calls.policy,
                "tasks": tasks,
            }
        )

    if not docs:

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> JSONResponse:
            """The schema, for tools (client generators, fuzzers) that send a token."""
            guard.caller(request)
            return JSONResponse(app.openapi())

    if not server.metrics_port:

        @app.get(
            "/metrics",
            response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, 401: {}},
        )
        async def prometheus_metrics(request: Request) -> Response:
            guard.metrics(request)
            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def predict_analyzer(live: FaceAnalyzer, chosen: DetectorRange | None) -> FaceAnalyzer:
        """The served model with the offline detector; a detector model that cannot be
        loaded (not in the repository, the wrong variant) is a 503 with its reason."""
        try:
            return state.predict_detectors.analyzer(live, chosen)
        except (LookupError, OSError, ValueError) as exc:
            raise ApiError(503, "model_unavailable", f"face detector: {exc}") from None

    @app.post(
        "/v1/predict",
        response_model=FaceMessage,
        response_model_by_alias=True,
        response_model_exclude_none=True,
        responses={400: {}, 401: {}, 413: {}, 415: {}, 422: {}, 503: {}},
    )
    async def predict(
        request: Request,
        _: None = Depends(guard_caller),
        detect: bool = Query(True, description="false: the image is one face"),
        detector_range: DetectorRange | None = Query(
            None,
            alias="range",
            description="BlazeFace detector: far (the default, as `emostream analyze`) also "
            "tiles the image for small, distant faces (groups, crowds); near runs only the "
            "short-range model (one close face, the live default); auto runs both models on "
            "the whole image. Default: EMOSTREAM_DETECTOR__RANGE if set, else far. A 422 "
            "for a detector without a range",
        ),
    ) -> FaceMessage:
        """One image (raw body or multipart ``file``) -> one face message, faces found as
        ``emostream analyze`` finds them."""
        t0 = time.monotonic()
        live = state.face
        if live is None:
            raise ApiError(503, "model_unavailable", state.load_error or "models are loading")
        try:
            state.predict_detectors.check(detector_range)
        except RangeNotApplicableError as exc:
            raise ApiError(422, "range_not_applicable", str(exc)) from None
        data = await image_bytes(request, state.settings.limits.max_body_bytes)
        metrics.FRAMES_IN.labels("face").inc()
        try:
            header = open_image(data, state.settings.limits.max_pixels)  # no pixel decoded
            async with state.decode.reserve(decode_bytes(header)):
                face = await state.rest.run(predict_analyzer, live, detector_range)
                t1 = time.monotonic()
                image = await state.rest.run(decode_opened, header, data)
                metrics.STAGE_LATENCY.labels("decode", "face").observe(time.monotonic() - t1)
                state.seq += 1
                h, w = image.shape[:2]
                job = Job("", state.seq, None, image, FrameInfo(w, h, detect=detect), created=t0)
                (outcome,) = await state.rest.run(run_batch, face, [job])
                del image, job  # the pixels go before their reservation does
        except MediaError as exc:
            metrics.FRAMES_DROPPED.labels("face", exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.detail) from None
        if not isinstance(outcome, Scored):
            why = outcome.error if isinstance(outcome, Failed) else outcome.reason.value
            raise ApiError(500, "inference_failed", f"the image could not be analysed: {why}")
        latency = time.monotonic() - t0
        metrics.STAGE_LATENCY.labels("end_to_end", "face").observe(latency)
        return face_message(
            outcome, latency_s=latency, unsure_below=state.settings.results.unsure_below
        )

    return app
