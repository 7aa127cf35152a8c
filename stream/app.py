"""The HTTP API of ``emostream serve`` (FastAPI): signalling, predict, health, metrics.

WebRTC signalling (``/whip``, ``/v1/offer``, SSE events) comes from ``signalling``; the
demo page from ``static/``. ``/v1/predict`` takes the same inference path as the real-time
worker (``run_batch``), so it scores and counts a frame exactly as a session would. CPU
work (decode, detect, classify) runs in worker threads behind a capacity limiter, so the
event loop keeps answering health checks and other sessions while a big image is processed.

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

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.exceptions import HTTPException

from emostream import __version__, metrics
from emostream.broker.base import IngestBroker
from emostream.broker.factory import make_ingest
from emostream.broker.memory import MemoryBroker
from emostream.models.batching import BatchWorker
from emostream.models.face import FaceAnalyzer
from emostream.models.repository import ModelRepository
from emostream.models.serving import ModelSlot
from emostream.models.voice import VoiceAnalyzer, VoiceService
from emostream.models.watch import ModelWatcher
from emostream.pipeline.analyzer import run_batch
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.messages import face_message
from emostream.pipeline.outcomes import Failed, Scored
from emostream.schema import FaceMessage
from emostream.settings import Settings
from emostream.stream import logs, signalling
from emostream.stream.auth import SESSION_TOKEN_HEADER, Guard
from emostream.stream.body import UploadBudget, image_bytes
from emostream.stream.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    unexpected_error_handler,
    validation_handler,
)
from emostream.stream.media import MediaError, decode_image
from emostream.stream.sessions import SessionManager
from emostream.stream.voice_track import VoiceSupport
from emostream.stream.windows import Windower
from emostream.supervise import readiness

log = logging.getLogger(__name__)


class AppState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slot: ModelSlot[FaceAnalyzer] | None = None
        self.face_error: str | None = None
        self.limiter = anyio.CapacityLimiter(settings.limits.predict_concurrency)
        self.seq = 0
        self.broker: IngestBroker | None = None
        self.worker: BatchWorker | None = None
        self.watcher: ModelWatcher | None = None
        self.sessions: SessionManager | None = None
        #: voice: its analyzer's slot (None while unavailable: ``voice.unavailable`` says
        #: why), its in-process worker and watcher
        self.voice = VoiceService(unavailable="models are loading")
        self.voice_slot: ModelSlot[VoiceAnalyzer] | None = None
        self.voice_worker: BatchWorker | None = None
        self.voice_watcher: ModelWatcher | None = None

    @property
    def face(self) -> FaceAnalyzer | None:
        """The analyzer serving now (read once per request: a swap takes the next one)."""
        return None if self.slot is None else self.slot.analyzer

    @face.setter
    def face(self, analyzer: FaceAnalyzer | None) -> None:
        self.slot = None if analyzer is None else ModelSlot(analyzer)

    async def start_realtime(self) -> None:
        """The broker, the session manager, the model watcher and, with ``memory``, the
        in-process worker.

        With a Redis broker the batching workers are separate processes (``emostream
        worker``); this node only ingests, routes results and answers REST predictions,
        so it follows promotions (for /v1/predict) but runs no shadow.
        """
        slot = self.slot
        if slot is None:
            return
        s = self.settings
        if s.broker.is_redis:
            self.broker = make_ingest(s)
        else:  # one in-process broker plays both roles: sessions submit, our worker takes
            self.broker = embedded = MemoryBroker(s.broker)
            self.worker = BatchWorker(embedded, slot, s.worker)
        await self.broker.start()
        metrics.initialise("ingest" if s.broker.is_redis else "all-in-one")
        if self.worker is not None:
            batch = self.worker.max_batch
            provider = slot.analyzer.provider
            metrics.WORKER_INFO.labels("in-process", provider, str(batch)).set(1)
            self.worker.start()
        repo = ModelRepository(s.model_root)
        shadow = self.worker is not None
        self.watcher = ModelWatcher(slot, repo, s.face, s.runner, s.drift, shadow=shadow)
        self.watcher.start()
        self._start_voice(repo)
        self.sessions = SessionManager(self.broker, s.session, self._voice_support())
        self.sessions.start()

    def _start_voice(self, repo: ModelRepository) -> None:
        """Beside the face path, the same for voice: a worker (memory broker) and a watcher."""
        analyzer, s = self.voice.analyzer, self.settings
        if analyzer is None:
            return
        self.voice_slot = slot = ModelSlot(analyzer)
        metrics.initialise("ingest" if s.broker.is_redis else "all-in-one", "voice")
        if isinstance(self.broker, MemoryBroker):
            self.voice_worker = BatchWorker(self.broker, slot, s.worker)
            self.voice_worker.start()
        self.voice_watcher = ModelWatcher(slot, repo, s.voice, s.runner, s.drift)
        self.voice_watcher.start()

    def _voice_support(self) -> VoiceSupport:
        """What sessions do with audio: a windower per new track (the shared VAD, the
        window and hop of the voice model serving at that moment), or why they cannot."""
        vad, slot, config = self.voice.vad, self.voice_slot, self.settings.voice
        if vad is None or slot is None:
            return VoiceSupport(problem=f"voice is unavailable: {self.voice.unavailable}")
        return VoiceSupport(lambda: Windower.for_model(vad, slot.analyzer.spec, config))

    async def stop_realtime(self) -> None:
        if self.voice_watcher is not None:
            await self.voice_watcher.stop()
        if self.watcher is not None:
            await self.watcher.stop()
        if self.sessions is not None:
            await self.sessions.close()
        if self.worker is not None:
            await self.worker.stop()
        if self.voice_worker is not None:
            await self.voice_worker.stop()
        if self.broker is not None:
            await self.broker.close()

    def voice_status(self) -> dict[str, object]:
        """/readyz: the voice model serving now (and its VAD), or why voice is unavailable."""
        status = self.voice.status()
        if self.voice_slot is not None:
            status.update(self.voice_slot.status())
        return status

    def load(self) -> None:
        s = self.settings
        try:
            self.face = FaceAnalyzer.from_settings(s)
            log.info("serving %s on %s", self.face.model, self.face.provider)
        except (LookupError, ValueError, OSError) as exc:
            self.face, self.face_error = None, str(exc)
            log.error("face model not loaded: %s", exc)
        self.voice = VoiceService.load(s)  # a missing voice model leaves faces serving


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
            listener, _ = start_http_server(server.metrics_port, addr=server.metrics_host)
        try:
            if state.face is None and state.face_error is None:
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
    app.include_router(signalling.router(settings, lambda: state.sessions))
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
        slot = state.slot
        if slot is None:
            return JSONResponse(
                {"ready": False, "reason": state.face_error or "models are loading"}, 503
            )
        face = slot.analyzer
        broker = state.broker
        if broker is not None and not await broker.healthy():
            return JSONResponse({"ready": False, "reason": broker.problem or "broker down"}, 503)
        owners = (
            broker,
            state.worker,
            state.watcher,
            state.sessions,
            state.voice_worker,
            state.voice_watcher,
        )
        problem, tasks = readiness(t for o in owners if o is not None for t in o.tasks)
        if problem is not None:
            return JSONResponse({"ready": False, "reason": problem, "tasks": tasks}, 503)
        return JSONResponse(
            {
                "ready": True,
                "broker": state.settings.broker.redacted_url,
                "models": {
                    "face": slot.status(),
                    "detector": face.detector.ref,
                    "voice": state.voice_status(),
                },
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
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

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
    ) -> FaceMessage:
        """One image (raw body or multipart ``file``) -> one face message."""
        t0 = time.monotonic()
        face = state.face
        if face is None:
            raise ApiError(503, "model_unavailable", state.face_error or "models are loading")
        data = await image_bytes(request, state.settings.limits.max_body_bytes)
        metrics.FRAMES_IN.labels("face").inc()
        try:
            async with state.limiter:
                t1 = time.monotonic()
                image = await anyio.to_thread.run_sync(
                    decode_image, data, state.settings.limits.max_pixels
                )
                metrics.STAGE_LATENCY.labels("decode", "face").observe(time.monotonic() - t1)
                state.seq += 1
                h, w = image.shape[:2]
                job = Job("", state.seq, None, image, FrameInfo(w, h, detect=detect), created=t0)
                (outcome,) = await anyio.to_thread.run_sync(run_batch, face, [job])
        except MediaError as exc:
            metrics.FRAMES_DROPPED.labels("face", exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.detail) from None
        if not isinstance(outcome, Scored):
            why = outcome.error if isinstance(outcome, Failed) else outcome.reason.value
            raise ApiError(500, "inference_failed", f"the image could not be analysed: {why}")
        latency = time.monotonic() - t0
        metrics.STAGE_LATENCY.labels("end_to_end", "face").observe(latency)
        return face_message(outcome, latency_s=latency)

    return app
