"""``POST /v1/analyze``: a recorded call (any audio or video file) in, its messages and the
call's summary out.

A recording is one more transport (transport ``file`` in its summary): the body (raw, or
the multipart field ``file``) is held in memory, never written anywhere, and decoded from
there by FFmpeg (PyAV on a ``BytesIO``) as a stream, through the windows, VAD, voice
model and ``CallRecord`` a live call uses (``emostream/analyze_voice.py``); a video's
frames go through the face path of ``emostream analyze``. ``?channels=agent,customer``
makes each channel of the recording a track of that role, and ``calls.analyse_roles``
applies as it does live: a channel whose role is not analysed is not resampled, windowed
or classified, only its seconds counted.

Bounded like every upload: ``limits.max_recording_bytes`` while the body streams in (413
``body_too_large``), ``limits.max_recording_s`` of media from the container's header before
anything is decoded, else while decoding (413 ``too_long``). The work runs in the REST
threads (``rest_pool``, niced below live sessions), within the decode budget: a video
reserves one frame's decoding cost, from its header (``decode_budget``). Auth is
``/v1/predict``'s (``Guard.caller``). Bad input is a 4xx with ``{"error", "detail"}``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from emostream.analyze import AnalyzeOptions, analyze_frames
from emostream.analyze_voice import analyze_recording
from emostream.modalities.base import ROLES, Service
from emostream.models.face import FaceAnalyzer
from emostream.models.voice import VoiceService
from emostream.schema import BaseMessage, FaceMessage, VoiceMessage
from emostream.settings import Settings
from emostream.stream.audio import (
    Channel,
    ChannelReader,
    channel_tracks,
    header_seconds,
    open_media,
)
from emostream.stream.auth import Guard
from emostream.stream.body import read_limited, upload_type
from emostream.stream.call_summary import CallRecord, CallSummary
from emostream.stream.decode_budget import DecodeBudget
from emostream.stream.errors import ApiError
from emostream.stream.media import (
    DECODE_BYTES_PER_PIXEL,
    MediaError,
    VideoFrame,
    container_frames,
)
from emostream.stream.predict_detectors import PredictDetectors
from emostream.stream.rest_pool import RestPool

RAW_TYPES = ("audio/", "video/", "application/octet-stream", "application/ogg")
#: FFmpeg formats that are one picture, not a recording: /v1/predict takes those
IMAGE_FORMATS = ("_pipe", "image2", "tty")


class RecordingAnalysis(BaseMessage):
    """The answer of ``POST /v1/analyze``: every message of the recording and its summary."""

    type: Literal["analysis"] = "analysis"
    source: str | None = Field(default=None, description="the multipart file's name")
    seconds: float = Field(description="seconds of audio in the recording")
    voice: list[VoiceMessage] = Field(description="one per window of each analysed track")
    face: list[FaceMessage] = Field(description="one per video frame (none for audio)")
    summary: CallSummary


class Served(Protocol):
    """What the route needs of the app's state (``stream.app.AppState``)."""

    settings: Settings
    services: dict[str, Service]
    rest: RestPool
    decode: DecodeBudget
    load_error: str | None
    predict_detectors: PredictDetectors  # analyze's detectors, built once

    @property
    def face(self) -> FaceAnalyzer | None: ...


@dataclass
class Upload:
    """A recording in memory: its bytes and its name (multipart only)."""

    data: bytes
    name: str | None


class _MemoryParser(MultiPartParser):
    """Starlette spools a file part over 1 MB to a temporary file; a recording must never
    touch the disk, so its spool is as large as the body limit."""

    def __init__(self, request: Request, body: bytes, limit: int) -> None:
        async def replay() -> AsyncGenerator[bytes, None]:
            yield body

        super().__init__(request.headers, replay(), max_files=1, max_fields=8, max_part_size=limit)
        self.spool_max_size = limit + 1


async def recording_upload(request: Request, limit: int) -> Upload:
    """The file in a raw (audio/*, video/*, octet-stream) or multipart/form-data body."""
    send = "a recording as audio/*, video/*, application/octet-stream"
    ctype = upload_type(request, RAW_TYPES, send)
    body = await read_limited(request, limit)
    if not body:
        raise ApiError(400, "empty_body", "the body is empty; send an audio or video file")
    if not ctype.startswith("multipart/form-data"):
        return Upload(body, None)
    try:
        form = await _MemoryParser(request, body, limit).parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"multipart body could not be parsed: {exc}") from None
    del body
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            await value.close()
            if not data:
                raise ApiError(400, "empty_body", "the file part is empty")
            return Upload(data, value.filename or None)
    raise ApiError(
        400,
        "no_file",
        "the multipart body has no file part; send one, e.g. curl -F file=@call.wav",
    )


def parse_channels(text: str | None) -> list[str] | None:
    """``?channels=agent,customer``: a role per channel, in order (400 ``bad_channels``)."""
    if text is None or not text.strip():
        return None
    roles = [part.strip() for part in text.split(",")]
    bad = [r for r in roles if r not in ROLES]
    if bad or len(roles) > 32:
        raise ApiError(
            400,
            "bad_channels",
            f"channels: {', '.join(bad)[:80] or 'too many'}: give one role per channel, "
            f"of {', '.join(ROLES)}",
        )
    return roles


def _within(frames: Iterator[VideoFrame], limit: float, source: str) -> Iterator[VideoFrame]:
    """The frames up to ``limit`` seconds of media; a later one is 413 ``too_long``."""
    for frame in frames:
        if frame.pts > limit:
            raise MediaError(
                "too_long", f"{source}: longer than the limit of {limit:g} s of media", 413
            )
        yield frame


def frame_bytes(upload: Upload, max_pixels: int) -> int:
    """What decoding a frame of the recording's video costs, from its header (0: no video;
    a frame over ``max_pixels`` is refused later, so it reserves no more than that)."""
    with open_media(upload.data, upload.name or "the recording") as container:
        if not container.streams.video:
            return 0
        ctx = container.streams.video[0].codec_context
        return min(ctx.width * ctx.height, max_pixels) * DECODE_BYTES_PER_PIXEL


def analyse_upload(
    upload: Upload,
    tracks: list[Channel],
    voice: VoiceService,
    face: FaceAnalyzer | None,
    settings: Settings,
    fps: float | None,
) -> RecordingAnalysis:
    """The whole analysis, in a worker thread: faces of the first video stream, then the
    voice of the first audio stream, each from its own pass over the bytes in memory."""
    limits = settings.limits
    session = "file-" + secrets.token_urlsafe(9)
    source = upload.name or "the recording"
    record = CallRecord(session, "file", frozenset(settings.calls.analyse_roles))
    if upload.name:
        record.ids["filename"] = upload.name[:200]
    faces: list[FaceMessage] = []
    with open_media(upload.data, source) as container:
        if container.format.name.endswith(IMAGE_FORMATS):
            raise MediaError(
                "unsupported_format",
                f"{source} is a picture ({container.format.name}): send it to /v1/predict",
                415,
            )
        has_audio = bool(container.streams.audio)
        if not has_audio and not container.streams.video:
            raise MediaError("no_audio", f"{source}: the file has no audio or video stream")
        claimed = header_seconds(container)
        if claimed is not None and claimed > limits.max_recording_s:
            raise MediaError(
                "too_long",
                f"{source}: longer than the limit of {limits.max_recording_s:g} s of media "
                f"(its header says {claimed:.1f} s)",
                413,
            )
        if container.streams.video:
            if face is None:
                raise ApiError(503, "model_unavailable", "the face model is not loaded")
            frames = container_frames(container, fps, limits.max_pixels, source)
            opts = AnalyzeOptions(
                fps=fps,
                progress=False,
                max_pixels=limits.max_pixels,
                unsure_below=settings.results.unsure_below,
            )
            within = _within(frames, limits.max_recording_s, source)
            faces = list(analyze_frames(face, within, upload.name, session, opts))
    seconds = 0.0
    messages: list[VoiceMessage] = []
    if has_audio:
        with open_media(upload.data, source) as container:
            reader = ChannelReader(
                container, tracks, max_seconds=limits.max_recording_s, source=source
            )
            messages = list(
                analyze_recording(voice, reader, settings.results.unsure_below, upload.name, record)
            )
            seconds = reader.seconds
    record.ended = time.time()
    return RecordingAnalysis(
        source=upload.name,
        seconds=round(seconds, 3),
        voice=messages,
        face=faces,
        summary=record.summary(),
    )


def router(state: Served) -> APIRouter:
    r = APIRouter()
    settings = state.settings
    guard = Guard(settings.server)

    def guard_caller(request: Request) -> None:
        """As a dependency, so the token is checked before the query is validated."""
        guard.caller(request)

    @r.post(
        "/v1/analyze",
        response_model=RecordingAnalysis,
        response_model_by_alias=True,
        response_model_exclude_none=True,
        responses={400: {}, 401: {}, 413: {}, 415: {}, 422: {}, 503: {}},
    )
    async def analyze(
        request: Request,
        _: None = Depends(guard_caller),
        channels: str | None = Query(
            None,
            description="a role per channel of the recording, in order (agent,customer): each "
            "channel is a track of that role; default: the channels mixed, role unknown",
        ),
        fps: float | None = Query(
            None, gt=0, le=240, description="videos: analyse about this many frames a second"
        ),
    ) -> RecordingAnalysis:
        """A recording (raw body or multipart ``file``: WAV, FLAC, MP3, OGG, WebM, M4A/MP4,
        any rate; a video too) -> its voice (and face) messages and the call's summary."""
        roles = parse_channels(channels)
        voice = state.services.get("voice")
        if not isinstance(voice, VoiceService) or voice.serving is None or voice.vad is None:
            why = voice.unavailable if voice is not None else None
            raise ApiError(503, "model_unavailable", f"voice is unavailable: {why or 'loading'}")
        upload = await recording_upload(request, settings.limits.max_recording_bytes)

        def offline_face() -> FaceAnalyzer | None:
            """The served model with analyze's detector (a recording is not live)."""
            live = state.face
            return None if live is None else state.predict_detectors.analyzer(live, None)

        tracks = channel_tracks(roles, settings.calls.analyse_roles)
        try:
            cost = await state.rest.run(frame_bytes, upload, settings.limits.max_pixels)
            async with state.decode.reserve(cost):
                return await state.rest.run(
                    lambda: analyse_upload(upload, tracks, voice, offline_face(), settings, fps)
                )
        except MediaError as exc:
            raise ApiError(exc.status, exc.code, exc.detail) from None

    return r
