"""The local multi-process broker's own rules, beyond the broker contract (test_broker.py):
shared-memory slots, whole-server admission, the session directory, ended calls' records,
and what happens when an inference or an ingest process goes away."""

from __future__ import annotations

import asyncio
import os
import socket

import numpy as np
import pytest
from local_broker import Local, SyncedIngest, local_broker

from emostream.broker.broker_config import BrokerConfig
from emostream.broker.outage import NO_WORKER
from emostream.local.arena import Arena, ArenaFullError, Layout, Ref
from emostream.local.channel import Channel
from emostream.pipeline.jobs import DropReason
from emostream.pipeline.outcomes import BrokerNotice, Dropped, SessionEvent
from emostream.stream.server_config import SessionConfig
from emostream.stream.session_manager import SessionExistsError, SessionLimitError

from brokers import face_job, voice_job

CONFIG = BrokerConfig(max_in_flight=2, deadline_ms=30_000)


async def _next(local: Local, session: str) -> SessionEvent:
    it = local.ingest.results(session).__aiter__()
    return await asyncio.wait_for(it.__anext__(), 10)


def test_a_payload_round_trips_through_shared_memory_without_a_name() -> None:
    before = {n for n in os.listdir("/dev/shm") if "emostream" in n}
    layout = Layout(1024, 2, 64 * 48 * 3, 1)
    writer = Arena.create(3, layout)
    reader = Arena(3, writer.fd, layout)
    frame = np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3)
    window = np.linspace(-1, 1, 200, dtype=np.float32)
    fref, wref = writer.put(frame), writer.put(window)
    assert wref.slot < layout.small <= fref.slot  # a window takes a small slot
    assert Ref.parse(fref.token) == fref
    assert np.array_equal(reader.view(Ref.parse(fref.token)), frame)
    assert np.array_equal(reader.view(wref), window)
    with pytest.raises(ArenaFullError):
        writer.put(frame)  # one large slot, taken
    writer.free(fref.slot)
    assert writer.put(frame).slot == fref.slot
    now = {n for n in os.listdir("/dev/shm") if "emostream" in n}
    assert now == before  # memfd: nothing named, nothing to leak
    for a in (reader, writer):
        a.close()
    os.close(writer.fd)


async def test_slots_come_back_with_every_kind_of_outcome() -> None:
    local = await local_broker(CONFIG)
    try:
        await local.ingest.open_session("s")
        for seq in range(1, 5):  # two superseded, two queued
            await local.ingest.submit(face_job("s", seq))
        jobs = await local.worker.take("face", 8, 0.0)
        assert [j.seq for j in jobs] == [3, 4]
        assert np.array_equal(jobs[0].payload, face_job("s", 3).payload)  # read in place
        await local.worker.publish([Dropped(j.header(), DropReason.error) for j in jobs])
        seen = [await _next(local, "s") for _ in range(4)]
        assert sorted(e.job.seq for e in seen if not isinstance(e, BrokerNotice)) == [1, 2, 3, 4]
        assert local.ingest.arena.in_use == 0
        await local.ingest.submit(face_job("s", 5))
        await local.ingest.close_session("s")  # a queued job of a closed session: freed too
        for _ in range(50):
            if local.ingest.arena.in_use == 0:
                break
            await asyncio.sleep(0.01)
        assert local.ingest.arena.in_use == 0
    finally:
        await local.close()


async def test_a_full_arena_drops_the_job_as_overload() -> None:
    local = await local_broker(CONFIG, layout=Layout(128 * 1024, 1, 640 * 640 * 3, 1))
    try:
        await local.ingest.open_session("a")
        await local.ingest.open_session("b")
        big = np.zeros((480, 640, 3), np.uint8)  # larger than a small slot
        await local.ingest.submit(face_job("a", 1, big))
        await local.ingest.submit(face_job("b", 1, big))  # the one large slot is taken
        event = await _next(local, "b")
        assert isinstance(event, Dropped) and event.reason is DropReason.overload
        await local.ingest.submit(voice_job("b", 1))  # a window has its own slot size
        assert [j.session for j in await local.worker.take("voice", 4, 0.0)] == ["b"]
    finally:
        await local.close()


async def test_jobs_held_by_a_dead_inference_process_are_answered_worker_died() -> None:
    local = await local_broker(CONFIG)
    try:
        await local.ingest.open_session("s")
        await local.ingest.submit(face_job("s", 1))
        assert len(await local.worker.take("face", 8, 0.0)) == 1
        assert local.ingest.problem is None
        local.worker.channel.close()  # what the hub sees when the process is killed
        local.hub.detach_inference(0)
        events = [await _next(local, "s") for _ in range(2)]
        notice = next(e for e in events if isinstance(e, BrokerNotice))
        died = next(e for e in events if isinstance(e, Dropped))
        assert notice.code == NO_WORKER
        assert died.reason is DropReason.worker_died and died.job.seq == 1
        assert local.ingest.problem is not None and "no inference" in local.ingest.problem
        assert not await local.ingest.healthy()
        assert local.ingest.arena.in_use == 0
    finally:
        await local.close()


async def _second_ingest(local: Local, index: int) -> SyncedIngest:
    ours, hubs = socket.socketpair()
    ingest = SyncedIngest(CONFIG, ours, Arena(index, local.arena.fd, local.arena.layout))
    channel = await Channel.open(hubs)
    local.hub.attach_ingest(index, channel)
    local.hub_channels[f"ingest{index}"] = channel
    local.tasks.append(
        asyncio.create_task(
            channel.serve(lambda k, b: local.hub.handle_ingest(index, channel, k, b))
        )
    )
    await ingest.start()
    return ingest


async def test_admission_directory_and_records_hold_for_the_whole_server() -> None:
    local = await local_broker(CONFIG, SessionConfig(max_sessions=2, max_sessions_per_owner=1))
    other = await _second_ingest(local, 1)
    try:
        await local.ingest.open_session("a", b"alice")
        with pytest.raises(SessionLimitError, match="credential"):
            await other.open_session("b", b"alice")  # the quota counts both processes
        with pytest.raises(SessionExistsError):
            await other.open_session("a")
        await other.open_session("b")
        with pytest.raises(SessionLimitError, match="2 sessions open"):
            await local.ingest.open_session("c")
        assert await local.ingest.owner("b") == 1 and await other.owner("a") == 0
        assert await other.owner("nobody") is None
        await local.ingest.keep_record("a", b"summary", 60)
        await local.ingest.close_session("a")
        assert await other.owner("a") is None
        assert await other.recall_record("a") == b"summary"
        await other.open_session("c")  # a's place is free again
        local.hub_channels["ingest1"].close()
        local.hub.detach_ingest(1)  # the process ended: its sessions end with it
        assert await local.ingest.owner("b") is None
        await local.ingest.open_session("d")
    finally:
        await other.close()
        await local.close()


def test_each_ingest_process_gets_its_share_of_the_rest_limits() -> None:
    from emostream.local.ingest_main import share_limits
    from emostream.stream.server_config import LimitsConfig

    whole = LimitsConfig(predict_concurrency=3, decode_budget_mb=1024, decode_queue=16)
    part = share_limits(whole, 2)
    assert (part.predict_concurrency, part.decode_budget_mb, part.decode_queue) == (2, 512, 8)
    assert part.max_upload_bytes_in_flight * 2 >= whole.max_upload_bytes_in_flight
    assert share_limits(LimitsConfig(predict_concurrency=1), 4).predict_concurrency == 1
    assert part.max_pixels == whole.max_pixels  # a per-request limit stays as it is
