"""Voice jobs and outcomes on the Redis wire: exact round trips, every bad field refused,
and a real redis-server carrying them (a bad window fails alone; with the real voice model
a worker scores a window)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from emostream import metrics
from emostream.broker.redis_ingest import RedisIngest
from emostream.broker.redis_worker import RedisWorker
from emostream.broker.wire import (
    Fields,
    WireError,
    decode_outcome,
    decode_payload,
    encode_job,
    encode_outcome,
    job_header,
)
from emostream.models.batching import BatchWorker
from emostream.models.repository import ModelRepository
from emostream.models.voice import VoiceAnalyzer
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.outcomes import (
    Dropped,
    Failed,
    Scored,
    VoiceScores,
)
from emostream.settings import Settings

from brokers import broker_config, next_event, voice_job
from redis_server import RedisServer
from voice_models import clip, config, has_voice_model, ravdess, voice_repo  # noqa: F401

CLASSES = ("angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised")
WIN = 24000
REPLY_TO = "emostream:results:n1"


def _window(seq: int = 0, samples: np.ndarray | None = None) -> Job:
    """The agent's window at 2.0-3.5 s that these tests send, answered to node n1."""
    return voice_job(
        "s1", seq, samples, track="agent", start=2.0, deadline_s=30.0, reply_to=REPLY_TO
    )


def _scored(job: Job) -> Scored[VoiceScores]:
    row = np.linspace(0.05, 0.2, 8, dtype=np.float32)[None, :]
    return Scored(job.header(), "voice-emotion/1", VoiceScores(row / row.sum(), CLASSES))


@pytest.mark.parametrize("codec", ["f32", "s16"])
def test_a_voice_job_round_trips(codec: Any) -> None:
    job = _window()
    fields = encode_job(job, audio=codec)
    back = job_header(fields, "7-0")
    assert back.info == job.info and back.modality == "voice"
    assert (back.session, back.seq, back.pts, back.reply_to, back.token) == (
        "s1",
        0,
        2.0,
        job.reply_to,
        "7-0",
    )
    samples = decode_payload(fields, back)
    assert samples.dtype == np.float32 and samples.shape == (WIN,)
    tolerance = 0.0 if codec == "f32" else 1 / 32767
    assert np.max(np.abs(samples - job.payload)) <= tolerance
    assert len(fields[b"data"]) == WIN * (4 if codec == "f32" else 2)


def test_voice_outcomes_round_trip() -> None:
    job = _window()
    scored = decode_outcome(encode_outcome(_scored(job)))
    assert isinstance(scored, Scored) and isinstance(scored.result, VoiceScores)
    assert scored.job.info == job.info and scored.model == "voice-emotion/1"
    assert scored.result.classes == CLASSES
    assert np.array_equal(scored.result.scores, _scored(job).result.scores)
    failed = decode_outcome(encode_outcome(Failed(job.header(), "bad window")))
    assert isinstance(failed, Failed) and failed.job.info == job.info


def _good() -> Fields:
    return encode_job(_window())


BAD_JOBS: dict[str, Fields] = {
    "no_track": {k: v for k, v in _good().items() if k != b"track"},
    "no_start": {k: v for k, v in _good().items() if k != b"start"},
    "start_nan": {**_good(), b"start": b"nan"},
    "end_inf": {**_good(), b"end": b"inf"},
    "end_before_start": {**_good(), b"start": b"5.0", b"end": b"4.0"},
    "empty_span": {**_good(), b"start": b"4.0", b"end": b"4.0"},
    "rate_zero": {**_good(), b"rate": b"0"},
    "rate_huge": {**_good(), b"rate": b"10000000"},
    "rate_text": {**_good(), b"rate": b"fast"},
    "track_too_long": {**_good(), b"track": b"t" * 1000},
    "track_not_utf8": {**_good(), b"track": b"\xff\xfe"},
    "face_fields_in_voice": {**_good(), b"width": b"64", b"height": b"48"},
    "voice_fields_in_face": {
        **encode_job(
            Job(
                "s",
                0,
                None,
                np.zeros((8, 8, 3), np.uint8),
                FrameInfo(8, 8),
            )
        ),
        b"track": b"a",
    },
}
BAD_PAYLOADS: dict[str, Fields] = {
    "codec_unknown": {**_good(), b"codec": b"mp3"},
    "codec_jpeg": {**_good(), b"codec": b"jpeg"},
    "no_data": {k: v for k, v in _good().items() if k != b"data"},
    "odd_bytes": {**_good(), b"data": b"\x00" * 7},
    "empty": {**_good(), b"data": b""},
    "too_long": {**_good(), b"data": b"\x00" * (4 * 16000 * 31)},
}


@pytest.mark.parametrize("name", sorted(BAD_JOBS))
def test_each_bad_voice_header_is_a_wire_error(name: str) -> None:
    with pytest.raises(WireError):
        job_header(BAD_JOBS[name], "1-0")


@pytest.mark.parametrize("name", sorted(BAD_PAYLOADS))
def test_each_bad_window_is_a_wire_error(name: str) -> None:
    fields = BAD_PAYLOADS[name]
    job = job_header(fields, "1-0")  # the header is fine: the session can be told
    with pytest.raises(WireError):
        decode_payload(fields, job)


def _outcome() -> Fields:
    return encode_outcome(_scored(_window()))


@pytest.mark.parametrize(
    "fields",
    [
        {**_outcome(), b"scores": np.zeros(7, "<f4").tobytes()},
        {**_outcome(), b"scores": np.full(8, np.nan, "<f4").tobytes()},
        {**_outcome(), b"boxes": np.zeros(4, "<i4").tobytes()},
        {**_outcome(), b"classes": b""},
        {**_outcome(), b"end": b"-1"},
    ],
    ids=["short_scores", "nan_scores", "boxes", "no_classes", "end_before_start"],
)
def test_each_bad_voice_outcome_is_a_wire_error(fields: Fields) -> None:
    with pytest.raises(WireError):
        decode_outcome(fields)


# -- on a real redis-server -----------------------------------------------------------


async def test_a_window_the_worker_cannot_read_fails_alone(
    redis_server: RedisServer, ingest: RedisIngest
) -> None:
    """A voice entry whose header is fine but whose samples are not: its session hears a
    failure, the worker goes on, the entry is acked."""
    import redis.asyncio as aioredis

    worker = RedisWorker(broker_config(redis_server.url), consumer="w")
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await ingest.open_session("s1")
        await worker.take("voice", 8, 0.0)  # joins the group
        job = _window()
        job.reply_to = ingest.results_key
        fields = {**encode_job(job), b"data": b"\x01" * 7}
        await r.xadd("emostream:jobs:voice", fields)  # type: ignore[arg-type]
        for _ in range(5):
            assert await worker.take("voice", 8, 0.0) == []
        ((_, out),) = await r.xrange(ingest.results_key)
        event = decode_outcome(out)
        assert isinstance(event, Failed) and "bad payload" in event.error
        assert event.job.info == job.info
        assert (await r.xpending("emostream:jobs:voice", "emostream-workers"))["pending"] == 0
    finally:
        await r.aclose()
        await worker.close()


async def test_a_redis_worker_scores_a_real_voice_window(
    redis_server: RedisServer,
    ingest: RedisIngest,
    has_voice_model: ModelRepository,  # noqa: F811
    clip: np.ndarray,  # noqa: F811
) -> None:
    analyzer = VoiceAnalyzer.from_settings(Settings(model_root=has_voice_model.root))
    broker = RedisWorker(broker_config(redis_server.url), consumer="w")
    worker = BatchWorker(broker, analyzer)
    before = metrics.FRAMES_PROCESSED.labels("voice")._value.get()  # type: ignore[attr-defined]
    await ingest.open_session("s1")
    worker.start()
    try:
        middle = len(clip) // 2
        window = clip[middle - WIN // 2 : middle + WIN // 2].copy()
        await ingest.submit(_window(1, window))
        bad = _window(2, np.full(WIN, np.nan, np.float32))  # f32 NaNs travel; the analyzer refuses
        await ingest.submit(bad)
        got = [await next_event(ingest, "s1"), await next_event(ingest, "s1")]
    finally:
        await worker.stop()
        await broker.close()
    by_seq = {e.job.seq: e for e in got if not isinstance(e, Dropped)}
    scored, failed = by_seq[1], by_seq[2]
    assert isinstance(scored, Scored) and isinstance(scored.result, VoiceScores)
    assert scored.model == analyzer.model
    row = scored.result.scores
    assert row.shape == (1, len(analyzer.classes)) and math.isclose(
        float(row.sum()), 1, abs_tol=1e-3
    )
    assert isinstance(failed, Failed) and "NaN" in failed.error
    assert metrics.FRAMES_PROCESSED.labels("voice")._value.get() == before + 1  # type: ignore[attr-defined]
