"""REST and offline work beside live sessions (issue 24): the decode budget, reserved from
an image's header before decoding, its bounded queue, and the niced REST threads.

The budget's queue runs on a real event loop; the app runs with the real models through
FastAPI's TestClient. Waits are bounded failure guards, never speed checks.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.app import AppState, create_app
from emostream.stream.decode_budget import DecodeBudget, LocalLedger
from emostream.stream.errors import ApiError
from emostream.stream.media import DECODE_BYTES_PER_PIXEL
from emostream.stream.rest_pool import RestPool

GUARD_S = 20.0


class Counting(LocalLedger):
    """A local ledger that remembers every reservation it granted."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.taken: list[int] = []

    def try_take(self, n: int) -> bool:
        ok = super().try_take(n)
        if ok:
            self.taken.append(n)
        return ok


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, "PNG")
    return buf.getvalue()


# --- the budget on its own ----------------------------------------------------------------


def test_a_request_beyond_the_budget_waits_and_goes_when_room_is_given_back() -> None:
    async def scenario() -> list[str]:
        budget = DecodeBudget(LocalLedger(100), max_waiting=4, max_wait_s=GUARD_S)
        order: list[str] = []
        first_in, release = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with budget.reserve(80):
                order.append("first in")
                first_in.set()
                await release.wait()
            order.append("first out")

        async def second() -> None:
            await first_in.wait()
            async with budget.reserve(80):
                order.append("second in")

        task = asyncio.gather(first(), second())
        await first_in.wait()
        while budget.waiting == 0:  # the second is queued behind the first
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait_for(task, GUARD_S)
        assert isinstance(budget.ledger, LocalLedger) and budget.ledger.used == 0
        return order

    assert asyncio.run(scenario()) == ["first in", "first out", "second in"]


def test_a_full_queue_or_a_wait_too_long_is_503_server_busy_with_retry_after() -> None:
    async def scenario() -> list[ApiError]:
        ledger = LocalLedger(100)
        errors: list[ApiError] = []
        full = DecodeBudget(ledger, max_waiting=0, max_wait_s=GUARD_S)
        slow = DecodeBudget(ledger, max_waiting=4, max_wait_s=0.05)
        async with full.reserve(100):
            for budget in (full, slow):
                with pytest.raises(ApiError) as err:
                    async with budget.reserve(1):
                        pass
                errors.append(err.value)
            assert slow.waiting == 0  # the one that gave up left the queue
        assert ledger.used == 0
        return errors

    for err in asyncio.run(scenario()):
        assert (err.status, err.code) == (503, "server_busy")
        assert err.headers is not None and err.headers["Retry-After"].isdigit()
        assert "limits.decode_budget_mb" in err.detail


def test_the_reservation_comes_back_when_the_work_fails() -> None:
    async def scenario() -> int:
        ledger = LocalLedger(100)
        budget = DecodeBudget(ledger, max_waiting=4, max_wait_s=GUARD_S)
        with pytest.raises(RuntimeError):
            async with budget.reserve(60):
                raise RuntimeError("decoder crashed")
        return ledger.used

    assert asyncio.run(scenario()) == 0


def test_one_image_larger_than_the_whole_budget_still_goes_alone() -> None:
    ledger = LocalLedger(10)
    assert ledger.try_take(50)
    assert not ledger.try_take(1)


# --- the REST threads ---------------------------------------------------------------------


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice is Linux's")
def test_rest_threads_run_niced_and_leave_the_callers_priority_alone() -> None:
    before = _priority()
    pool = RestPool(threads=1, nice=5)
    inside = asyncio.run(pool.run(_priority))
    assert inside == min(before + 5, 19)
    assert _priority() == before


# --- through the app ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_state(repo: ModelRepository) -> Iterator[tuple[TestClient, AppState]]:
    settings = Settings(model_root=repo.root, limits={"decode_queue": 0, "rest_nice": 3})
    state = AppState(settings)
    ledger = Counting(settings.limits.decode_budget_mb * 1024 * 1024)
    state.decode = DecodeBudget(ledger, 0, settings.limits.decode_wait_s)
    with TestClient(create_app(settings, state), raise_server_exceptions=False) as client:
        yield client, state


def _ledger(state: AppState) -> Counting:
    assert isinstance(state.decode.ledger, Counting)
    return state.decode.ledger


def test_predict_reserves_the_headers_decoding_cost_and_gives_it_back(
    app_state: tuple[TestClient, AppState],
) -> None:
    client, state = app_state
    ledger = _ledger(state)
    ledger.taken.clear()
    r = client.post("/v1/predict", content=_png(640, 480), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert ledger.taken == [640 * 480 * DECODE_BYTES_PER_PIXEL]
    assert ledger.used == 0


def test_predict_gives_the_reservation_back_when_decoding_fails(
    app_state: tuple[TestClient, AppState],
) -> None:
    client, state = app_state
    ledger = _ledger(state)
    ledger.taken.clear()
    whole = _png(640, 480)
    cut = whole[: len(whole) - 40]  # a sound header, a truncated stream
    r = client.post("/v1/predict", content=cut, headers={"content-type": "image/png"})
    assert r.status_code == 422 and r.json()["error"] == "corrupt_image", r.text
    assert ledger.taken == [640 * 480 * DECODE_BYTES_PER_PIXEL]
    assert ledger.used == 0


def test_predict_beyond_a_full_budget_and_queue_is_503_server_busy(
    app_state: tuple[TestClient, AppState],
) -> None:
    client, state = app_state
    ledger = _ledger(state)
    ledger.used = ledger.limit  # as if other images held all of it
    try:
        r = client.post("/v1/predict", content=_png(64, 48), headers={"content-type": "image/png"})
    finally:
        ledger.used = 0
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "server_busy" and "decode" in r.json()["detail"]
    assert r.headers["Retry-After"].isdigit()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice is Linux's")
def test_predict_work_runs_in_the_niced_rest_threads(
    app_state: tuple[TestClient, AppState],
) -> None:
    client, state = app_state
    assert state.rest.nice == 3
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert asyncio.run(state.rest.run(_priority)) == min(base + 3, 19)
    r = client.post(
        "/v1/predict", content=_png(64, 48), headers={"content-type": "image/png"}
    )  # and the route still answers through them
    assert r.status_code == 200, r.text


def test_a_big_canvas_reserves_by_its_header_not_its_bytes(
    app_state: tuple[TestClient, AppState],
) -> None:
    client, state = app_state
    ledger = _ledger(state)
    ledger.taken.clear()
    body = _png(4000, 3000)
    assert len(body) < 200_000  # a few kB that decode to 36 MB
    r = client.post("/v1/predict", content=body, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert ledger.taken == [4000 * 3000 * DECODE_BYTES_PER_PIXEL]
    assert ledger.used == 0
