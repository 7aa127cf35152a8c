"""Hot promotion in one process: the watcher loads, checks and swaps, or refuses with a reason.

Real models throughout: version 2 is version 1's weights under a new card; the bad versions
are registered as a trainer would (their card's sha256 matches their bytes), so only
loading or checking them finds the fault. Each step polls the watcher directly (one
``poll`` per alias change), except the test of its supervised loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from emostream.broker.memory import MemoryBroker
from emostream.models.batching import BatchWorker, WorkerConfig
from emostream.models.face import FaceAnalyzer, FaceModelConfig
from emostream.models.repository import ModelRepository
from emostream.models.serving import ModelSlot
from emostream.models.watch import ModelWatcher
from emostream.pipeline.jobs import Box, FrameInfo, Job
from emostream.pipeline.outcomes import Scored
from emostream.settings import Settings
from emostream.stream.app import create_app

from model_versions import (
    NAME,
    copy_version,
    corrupt_version,
    not_probabilities_version,
    version_with_check,
    wrong_output_version,
)


def _loads(version: str, result: str) -> float:
    labels = {"model": NAME, "version": version, "result": result}
    return REGISTRY.get_sample_value("emostream_model_loads_total", labels) or 0.0


def _gauge(name: str, version: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"model": NAME, "version": version, **labels})


def _watcher(repo: ModelRepository, *, interval: float = 1.0) -> ModelWatcher:
    analyzer = FaceAnalyzer.from_settings(Settings(model_root=repo.root))
    config = FaceModelConfig(watch_interval_s=interval)
    return ModelWatcher(ModelSlot(analyzer), repo, config, shadow=True)


async def test_promotion_swaps_and_the_new_version_has_its_own_series(
    tmp_repo: ModelRepository,
) -> None:
    watcher = _watcher(tmp_repo)
    slot = watcher.slot
    assert await watcher.poll()  # the first look: production is what already serves
    assert slot.analyzer.model == f"{NAME}/1" and not slot.refused
    old = slot.analyzer
    copy_version(tmp_repo, "2")
    loaded = _loads("2", "loaded")
    tmp_repo.set_alias(NAME, "2")
    assert await watcher.poll()
    new = slot.analyzer
    assert new.model == f"{NAME}/2" and new is not old
    assert new.detector is old.detector  # the detector did not change: not reloaded
    assert _loads("2", "loaded") == loaded + 1
    modality = {"modality": "face"}
    assert _gauge("emostream_model_serving", "2", **modality) == 1
    assert _gauge("emostream_model_serving", "1", **modality) == 0
    # drift against version 2's own card from its first batch; version 1's series are gone
    assert _gauge("emostream_drift_window_samples", "2", **modality) == 0
    assert _gauge("emostream_drift_window_samples", "1", **modality) is None
    assert _gauge("emostream_drift_psi", "1", **modality) is None
    frame = np.full((64, 64, 3), 120, np.uint8)
    job = Job("s", 1, 0.0, frame, FrameInfo(64, 64, detect=False))
    (outcome,) = new.run([job])
    assert isinstance(outcome, Scored) and outcome.model == f"{NAME}/2"
    new.tally.observe(outcome)
    assert _gauge("emostream_drift_window_samples", "2", **modality) == 1
    assert not await watcher.poll()  # nothing changed since: nothing to do


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (corrupt_version, "ONNX Runtime cannot load it"),
        (wrong_output_version, "output has 3 classes, the card names 7"),
        (not_probabilities_version, "output is not probabilities"),
        (lambda r, v: version_with_check(r, v, offset=0.01), "outputs differ from check.npz"),
    ],
    ids=["corrupt-onnx", "wrong-output-size", "not-probabilities", "check-npz-mismatch"],
)
async def test_a_bad_version_is_refused_with_the_reason_and_the_old_keeps_serving(
    tmp_repo: ModelRepository, make: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = _watcher(tmp_repo)
    await watcher.poll()
    make(tmp_repo, "3")  # type: ignore[operator]
    before = _loads("3", "refused")
    tmp_repo.set_alias(NAME, "3")
    with caplog.at_level(logging.WARNING, logger="emostream.models.watch"):
        assert await watcher.poll()
    assert watcher.slot.analyzer.model == f"{NAME}/1"
    refusal = watcher.slot.refused["production"]
    assert refusal.version == "3" and reason in refusal.reason
    assert watcher.slot.status()["refused"]["production"]["reason"] == refusal.reason
    assert _loads("3", "refused") == before + 1
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert f"{NAME} version 3" in record.getMessage() and reason in record.getMessage()
    assert f"still serving {NAME}/1" in record.getMessage()
    for _ in range(3):  # the same refused version is not tried again while nothing changes
        assert not await watcher.poll()
    assert _loads("3", "refused") == before + 1
    tmp_repo.set_alias(NAME, "1")  # back to what serves: the refusal no longer applies
    assert await watcher.poll()
    assert not watcher.slot.refused and watcher.slot.analyzer.model == f"{NAME}/1"


async def test_a_version_with_a_matching_check_file_is_taken(tmp_repo: ModelRepository) -> None:
    watcher = _watcher(tmp_repo)
    await watcher.poll()
    version_with_check(tmp_repo, "4")
    tmp_repo.set_alias(NAME, "4")
    await watcher.poll()
    assert watcher.slot.analyzer.model == f"{NAME}/4" and not watcher.slot.refused


async def test_an_onnx_changed_after_registration_is_refused(tmp_repo: ModelRepository) -> None:
    watcher = _watcher(tmp_repo)
    await watcher.poll()
    copy_version(tmp_repo, "5")
    path = tmp_repo.version_dir(NAME, "5") / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    tmp_repo.set_alias(NAME, "5")
    await watcher.poll()
    assert watcher.slot.analyzer.model == f"{NAME}/1"
    assert "does not match its card" in watcher.slot.refused["production"].reason


async def test_the_supervised_loop_follows_the_alias_file(tmp_repo: ModelRepository) -> None:
    watcher = _watcher(tmp_repo, interval=0.02)
    watcher.start()
    try:
        (task,) = watcher.tasks
        assert task.name == "face-model-watch"
        copy_version(tmp_repo, "2")
        tmp_repo.set_alias(NAME, "2")
        for _ in range(500):  # failure guard, not a speed check
            if watcher.slot.analyzer.model == f"{NAME}/2":
                break
            await asyncio.sleep(0.02)
        assert watcher.slot.analyzer.model == f"{NAME}/2"
        assert task.problem is None and task.restarts == 0
    finally:
        await watcher.stop()


def test_interval_0_switches_nothing(tmp_repo: ModelRepository) -> None:
    async def main() -> None:
        watcher = _watcher(tmp_repo, interval=0)
        watcher.start()
        assert watcher.tasks == []

    asyncio.run(main())


async def test_the_batch_in_flight_finishes_on_the_old_version(
    tmp_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap lands while a batch is inside version 1: that batch is version 1's, the
    next one version 2's."""
    watcher = _watcher(tmp_repo)
    await watcher.poll()
    old = watcher.slot.analyzer
    inside, release = threading.Event(), threading.Event()
    real = old.classify

    def held(frames: Sequence[np.ndarray], boxes: Sequence[list[Box]]) -> list[np.ndarray]:
        inside.set()
        release.wait(30)
        return real(frames, boxes)

    monkeypatch.setattr(old, "classify", held)
    broker = MemoryBroker()
    worker = BatchWorker(broker, watcher.slot, WorkerConfig(max_batch=1, max_wait_ms=1))
    await broker.start()
    worker.start()
    try:
        await broker.open_session("s")
        results = broker.results("s")
        frame = np.full((64, 64, 3), 120, np.uint8)

        async def submit(seq: int) -> None:
            info = FrameInfo(64, 64, detect=False)
            await broker.submit(Job("s", seq, 0.0, frame, info, deadline=time.monotonic() + 60))

        await submit(1)
        assert await asyncio.to_thread(inside.wait, 30)
        copy_version(tmp_repo, "2")
        tmp_repo.set_alias(NAME, "2")
        await watcher.poll()  # swapped while batch 1 is still in version 1
        assert watcher.slot.analyzer.model == f"{NAME}/2"
        release.set()
        first = await asyncio.wait_for(anext(results), 30)
        await submit(2)
        second = await asyncio.wait_for(anext(results), 30)
    finally:
        release.set()
        await worker.stop()
        await broker.close()
    assert isinstance(first, Scored) and first.model == f"{NAME}/1"
    assert isinstance(second, Scored) and second.model == f"{NAME}/2"


def _until(check: Callable[[], bool]) -> None:
    for _ in range(500):  # failure guard, not a speed check
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_predict_and_readyz_follow_promotion_and_refusal(tmp_repo: ModelRepository) -> None:
    """The app's own watcher: /v1/predict answers with the promoted version, /readyz names
    a refused one with its reason while the old keeps answering."""
    settings = Settings(model_root=tmp_repo.root, face=FaceModelConfig(watch_interval_s=0.02))
    ok, png = cv2.imencode(".png", np.full((64, 64, 3), 120, np.uint8))
    assert ok
    headers = {"content-type": "image/png"}

    def predicted() -> str:
        r = client.post("/v1/predict?detect=false", content=png.tobytes(), headers=headers)
        assert r.status_code == 200, r.text
        return str(r.json()["model"])

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert predicted() == f"{NAME}/1"
        copy_version(tmp_repo, "2")
        tmp_repo.set_alias(NAME, "2")
        _until(lambda: predicted() == f"{NAME}/2")
        corrupt_version(tmp_repo, "3")
        tmp_repo.set_alias(NAME, "3")
        _until(lambda: bool(client.get("/readyz").json()["models"]["face"]["refused"]))
        ready = client.get("/readyz")
        assert ready.status_code == 200  # the old version serves: still ready
        face = ready.json()["models"]["face"]
        assert face["model"] == f"{NAME}/2"
        assert face["refused"]["production"]["version"] == "3"
        assert "ONNX Runtime cannot load it" in face["refused"]["production"]["reason"]
        assert "face-model-watch" in ready.json()["tasks"]
        assert predicted() == f"{NAME}/2"
        metrics_text = client.get("/metrics").text
    assert 'emostream_model_loads_total{model="face-emotion",result="refused",version="3"}' in (
        metrics_text
    )
    assert 'emostream_model_serving{modality="face",model="face-emotion",version="2"} 1.0' in (
        metrics_text
    )
