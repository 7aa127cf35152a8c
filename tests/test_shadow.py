"""Shadow evaluation: a candidate scores a sample of production's faces, after the clients
got theirs, counted per candidate and never sent.

Real models: the candidate is version 1's weights registered as version 2 (so it agrees
with production on every face), frames are whole-frame faces (``detect=False``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import REGISTRY

from emostream.broker.memory import MemoryBroker
from emostream.models.batching import BatchWorker, WorkerConfig
from emostream.models.check import load_checked
from emostream.models.face import FaceAnalyzer, FaceModelConfig
from emostream.models.repository import ModelRepository
from emostream.models.serving import ModelSlot
from emostream.models.shadow import Shadow
from emostream.models.watch import ModelWatcher
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.outcomes import Outcome, Scored
from emostream.settings import Settings

from model_versions import NAME, copy_version, corrupt_version


def _count(metric: str, version: str, **labels: str) -> float:
    full = {"model": NAME, "version": version, **labels}
    return REGISTRY.get_sample_value(metric, full) or 0.0


def _faces(n: int) -> list[Job]:
    rng = np.random.default_rng(7)
    return [
        Job(
            "s",
            i,
            0.0,
            rng.integers(0, 256, (64, 64, 3), np.uint8),
            FrameInfo(64, 64, detect=False),
        )
        for i in range(n)
    ]


@pytest.fixture()
def production(tmp_repo: ModelRepository) -> FaceAnalyzer:
    copy_version(tmp_repo, "2")
    return FaceAnalyzer.from_settings(Settings(model_root=tmp_repo.root))


def test_the_fraction_of_faces_is_scored_and_compared(
    tmp_repo: ModelRepository, production: FaceAnalyzer
) -> None:
    shadow = Shadow(load_checked(tmp_repo, NAME, "2"), 0.5)
    jobs = _faces(10)
    outcomes = production.run(jobs)
    faces, agree = (
        _count("emostream_shadow_faces_total", "2"),
        _count("emostream_shadow_agreement_total", "2"),
    )
    mix = {
        c: _count("emostream_shadow_predictions_total", "2", **{"class": c})
        for c in production.classes
    }
    assert shadow.compare(jobs, outcomes) == 5  # every other face: exactly half
    assert shadow.compare(jobs[:3], outcomes[:3]) == 1  # 13 faces so far: 6 scored
    assert _count("emostream_shadow_faces_total", "2") == faces + 6
    assert _count("emostream_shadow_agreement_total", "2") == agree + 6  # same weights
    after = {c: _count("emostream_shadow_predictions_total", "2", **{"class": c}) for c in mix}
    assert sum(after.values()) - sum(mix.values()) == 6
    assert all(o.model == f"{NAME}/1" for o in outcomes if isinstance(o, Scored))


async def test_the_worker_shadows_after_publishing_and_clients_see_only_production(
    tmp_repo: ModelRepository, production: FaceAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = ModelSlot(production)
    slot.shadow = shadow = Shadow(load_checked(tmp_repo, NAME, "2"), 1.0)
    inside, release = threading.Event(), threading.Event()
    real = shadow.compare
    ran: list[int] = []

    def held(jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> int:
        inside.set()
        release.wait(30)
        ran.append(real(jobs, outcomes))
        return ran[-1]

    monkeypatch.setattr(shadow, "compare", held)
    broker = MemoryBroker()
    worker = BatchWorker(broker, slot, WorkerConfig(max_batch=4, max_wait_ms=1))
    await broker.start()
    worker.start()
    try:
        await broker.open_session("s")
        results = broker.results("s")
        job = _faces(1)[0]
        job.deadline = time.monotonic() + 60
        await broker.submit(job)
        got = await asyncio.wait_for(anext(results), 30)  # while the shadow is still held
        assert await asyncio.to_thread(inside.wait, 30)
        assert not ran
        release.set()
        for _ in range(300):  # failure guard
            if ran:
                break
            await asyncio.sleep(0.01)
    finally:
        release.set()
        await worker.stop()
        await broker.close()
    assert isinstance(got, Scored) and got.model == f"{NAME}/1"
    assert ran == [1]


async def test_the_watcher_loads_refuses_and_stops_the_shadow(
    tmp_repo: ModelRepository, production: FaceAnalyzer
) -> None:
    watcher = ModelWatcher(ModelSlot(production), tmp_repo, FaceModelConfig(), shadow=True)
    slot = watcher.slot
    await watcher.poll()
    assert slot.shadow is None
    faces = _count("emostream_shadow_faces_total", "2")  # other tests may have scored some
    tmp_repo.set_shadow(NAME, "2", 0.5)
    await watcher.poll()
    assert slot.shadow is not None and (slot.shadow.model, slot.shadow.fraction) == (
        f"{NAME}/2",
        0.5,
    )
    assert slot.analyzer.model == f"{NAME}/1"  # production untouched
    assert _count("emostream_shadow_faces_total", "2") == faces  # loading scores no face
    assert (
        REGISTRY.get_sample_value("emostream_shadow_faces_total", {"model": NAME, "version": "2"})
        is not None
    )
    kept = slot.shadow.classifier
    tmp_repo.set_shadow(NAME, "2", 0.1)  # a new share: same classifier, not reloaded
    await watcher.poll()
    assert slot.shadow.classifier is kept and slot.shadow.fraction == 0.1
    corrupt_version(tmp_repo, "3")
    tmp_repo.set_shadow(NAME, "3", 1.0)
    await watcher.poll()
    assert slot.shadow.model == f"{NAME}/2"  # the refused one never replaces it
    assert "ONNX Runtime cannot load it" in slot.refused["shadow"].reason
    assert slot.status()["shadow"] == {"model": f"{NAME}/2", "fraction": 0.1}
    tmp_repo.clear_shadow(NAME)
    await watcher.poll()
    assert slot.shadow is None and "shadow" not in slot.refused


async def test_an_ingest_watcher_follows_production_but_runs_no_shadow(
    tmp_repo: ModelRepository, production: FaceAnalyzer
) -> None:
    watcher = ModelWatcher(ModelSlot(production), tmp_repo, FaceModelConfig(), shadow=False)
    tmp_repo.set_shadow(NAME, "2")
    await watcher.poll()
    assert watcher.slot.shadow is None
