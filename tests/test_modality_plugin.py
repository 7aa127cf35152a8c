"""A third modality plugs in as one spec: registered from outside, it goes through the
wire, both broker rules and a session's view without any other module knowing it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest

from emostream.broker.broker_config import BrokerConfig
from emostream.broker.codecs import Fields, field_num
from emostream.broker.memory import MemoryBroker
from emostream.broker.wire import (
    decode_outcome,
    decode_payload,
    encode_job,
    encode_outcome,
    job_header,
)
from emostream.modalities import register, registered, unregister
from emostream.modalities.base import MediaTrack, ModalitySpec, ModalityView, Service, TrackSink
from emostream.pipeline.jobs import DropReason, Job
from emostream.pipeline.outcomes import Dropped, Scored, Scores
from emostream.schema import BaseMessage
from emostream.stream.session_view import SessionView


@dataclass(frozen=True)
class PulseInfo:
    modality: ClassVar[str] = "pulse"
    seconds: float


@dataclass(frozen=True)
class PulseScores:
    scores: np.ndarray
    classes: tuple[str, ...]


class PulseMessage(BaseMessage):
    type: str = "pulse"
    session: str | None = None
    label: str


class PulseView(ModalityView):
    def __init__(self, session: str) -> None:
        self.session, self.count = session, 0

    def message(self, scored: Scored[Any], latency_s: float) -> PulseMessage:
        self.count += 1
        result = scored.result
        label = result.classes[int(np.argmax(result.scores))]
        return PulseMessage(session=self.session, label=label)

    def summary(self) -> dict[str, object]:
        return {"messages": self.count}


class PulseSpec(ModalitySpec):
    name = "pulse"
    track_kind = "video"
    input_kind = "sensor"
    summary_key = "pulse"
    info_fields = frozenset({b"seconds"})

    def model_config(self, settings: Any) -> Any:
        raise NotImplementedError

    def in_flight(self, config: BrokerConfig) -> int:
        return 1

    def deadline_s(self, config: BrokerConfig) -> float:
        return 30.0

    def load(self, settings: Any, *, ingest: bool) -> Service:
        return Service(unavailable="a toy")

    def encode_info(self, info: PulseInfo) -> Fields:
        return {b"seconds": repr(info.seconds).encode()}

    def decode_info(self, fields: Fields) -> PulseInfo:
        return PulseInfo(field_num(fields, b"seconds"))

    def encode_payload(self, job: Job, config: BrokerConfig) -> Fields:
        return {b"data": np.asarray(job.payload, "<f4").tobytes()}

    def decode_payload(self, fields: Fields, job: Job) -> np.ndarray:
        return np.frombuffer(fields[b"data"], "<f4").copy()

    def encode_scores(self, result: Scores) -> Fields:
        return {b"scores": np.asarray(result.scores, "<f4").tobytes()}

    def decode_scores(self, fields: Fields, classes: tuple[str, ...]) -> PulseScores:
        return PulseScores(np.frombuffer(fields[b"scores"], "<f4").copy(), classes)

    def view(self, session: str, smoothing: float, unsure_below: float) -> PulseView:
        return PulseView(session)

    async def read(self, sink: TrackSink, track: MediaTrack) -> None:
        async for _ in track.frames:
            sink.touch()


@pytest.fixture()
def pulse() -> Iterator[PulseSpec]:
    spec = PulseSpec()
    register(spec)
    try:
        yield spec
    finally:
        unregister(spec.name)


def _job(seq: int) -> Job:
    samples = np.linspace(0, 1, 8, dtype=np.float32)
    return Job("s", seq, 1.0, samples, PulseInfo(2.0))  # type: ignore[arg-type]


def test_a_registered_modality_is_listed(pulse: PulseSpec) -> None:
    assert pulse in registered()


def test_its_jobs_and_outcomes_cross_the_wire(pulse: PulseSpec) -> None:
    job = _job(3)
    fields = encode_job(job)
    back = job_header(fields, "1-0")
    assert back.modality == "pulse" and back.info == PulseInfo(2.0)
    assert np.array_equal(decode_payload(fields, back), job.payload)
    scored = Scored(job.header(), "pulse/1", PulseScores(np.array([0.2, 0.8]), ("calm", "fast")))
    out = decode_outcome(encode_outcome(scored))
    assert isinstance(out, Scored) and out.result.classes == ("calm", "fast")
    assert np.allclose(out.result.scores, [0.2, 0.8])


async def test_the_broker_applies_its_own_rules(pulse: PulseSpec) -> None:
    broker = MemoryBroker(BrokerConfig())
    await broker.start()
    await broker.open_session("s")
    try:
        for seq in (1, 2):
            await broker.submit(_job(seq))
        jobs = await broker.take("pulse", 8, 0.0)
        assert [j.seq for j in jobs] == [2]  # in_flight 1: the newer one superseded the first
        assert math.isclose(jobs[0].deadline - jobs[0].created, 30.0)
        event = await anext(aiter(broker.results("s")))
        assert isinstance(event, Dropped) and event.reason is DropReason.superseded
    finally:
        await broker.close()


def test_a_session_view_builds_its_messages(pulse: PulseSpec) -> None:
    view = SessionView("s")
    scored = Scored(
        _job(1).header(), "pulse/1", PulseScores(np.array([0.9, 0.1]), ("calm", "fast"))
    )
    msg = view.message(scored)
    assert isinstance(msg, PulseMessage) and msg.label == "calm"
    assert view.summary()["pulse"] == {"messages": 1}
