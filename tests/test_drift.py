"""Class drift: PSI / JS arithmetic on known distributions, the window, the gauges."""

from __future__ import annotations

import logging
import math
import threading

import numpy as np
import pytest
from prometheus_client import REGISTRY

from emostream.models.drift import DriftConfig, DriftMonitor, DriftWindow, js_distance, psi
from emostream.models.face import FaceAnalyzer
from emostream.models.repository import ModelRepository
from emostream.pipeline.jobs import FrameInfo, Job
from emostream.pipeline.outcomes import FaceScores, Scored
from emostream.settings import Settings

CLASSES = ["angry", "happy", "sad"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def gauge(name: str, model: str) -> float | None:
    labels = {"model": model, "version": "1", "modality": "face"}
    return REGISTRY.get_sample_value(name, labels)


# --- arithmetic -------------------------------------------------------------------------


def test_identical_distributions_give_zero() -> None:
    q = [0.2, 0.3, 0.5]
    assert psi(q, q) == pytest.approx(0.0, abs=1e-12)
    assert js_distance(q, q) == pytest.approx(0.0, abs=1e-7)
    # counts or probabilities: both are normalised
    assert psi([2, 3, 5], q) == pytest.approx(0.0, abs=1e-12)


def test_psi_two_classes_by_hand() -> None:
    # (0.5-0.25)·ln(0.5/0.25) + (0.5-0.75)·ln(0.5/0.75) = 0.25·ln 2 + 0.25·ln 1.5 = 0.25·ln 3
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(3), rel=1e-12)
    # not symmetric in general, but this pair is: swap p, q and each term keeps its sign
    assert psi([0.25, 0.75], [0.5, 0.5]) == pytest.approx(0.25 * math.log(3), rel=1e-12)


def test_psi_one_hot_window_uses_the_eps_floor() -> None:
    eps = 1e-4
    q = np.array([0.2, 0.3, 0.5])
    # window all class 0: p = [1, eps, eps] renormalised; q has no zero so stays as is
    z = 1 + 2 * eps
    p = np.array([1 / z, eps / z, eps / z])
    expected = float(np.sum((p - q) * np.log(p / q)))
    # the same closed form written out term by term
    by_hand = (
        (1 / z - 0.2) * math.log(1 / z / 0.2)
        + (eps / z - 0.3) * math.log(eps / z / 0.3)
        + (eps / z - 0.5) * math.log(eps / z / 0.5)
    )
    assert expected == pytest.approx(by_hand, rel=1e-12)
    assert psi([1, 0, 0], q, eps=eps) == pytest.approx(by_hand, rel=1e-12)
    assert psi([1, 0, 0], q) == pytest.approx(by_hand, rel=1e-12)  # 1e-4 is the default
    assert psi([1, 0, 0], q) == pytest.approx(7.9461, abs=1e-4)
    assert math.isfinite(psi([1, 0], [0, 1]))


def test_js_two_classes_by_hand() -> None:
    # disjoint supports: the maximum, 1
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    # p = [1, 0], q = [½, ½], m = [¾, ¼]: KL(p‖m) = 2 - log2 3, KL(q‖m) = 1 - ½·log2 3,
    # JSD = ½(2 - log2 3) + ½(1 - ½ log2 3) = 3/2 - ¾·log2 3
    jsd = 1.5 - 0.75 * math.log2(3)
    assert js_distance([1, 0], [0.5, 0.5]) == pytest.approx(math.sqrt(jsd), rel=1e-12)
    assert js_distance([1, 0], [0.5, 0.5]) == pytest.approx(0.55793, abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_js_symmetric_bounded_and_psi_nonnegative(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
        p[rng.integers(7)] = 0  # an empty bin as well
        d = js_distance(p, q)
        assert 0 <= d <= 1
        assert d == pytest.approx(js_distance(q, p), rel=1e-12)
        assert psi(p, q) >= 0


def test_mismatched_or_bad_vectors_are_rejected() -> None:
    with pytest.raises(ValueError, match="classes"):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="sums to 0"):
        js_distance([0, 0], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        psi([-0.1, 1.1], [0.5, 0.5])


# --- window -----------------------------------------------------------------------------


def test_window_expires_by_count() -> None:
    w = DriftWindow(3, size=4)
    for k in [0, 0, 1, 2, 2, 2]:
        w.add(k)
    assert len(w) == 4
    assert w.counts().tolist() == [0, 1, 3]  # the two oldest (both 0) are gone


def test_window_expires_by_time() -> None:
    clock = FakeClock()
    w = DriftWindow(3, seconds=10, clock=clock)
    w.extend([0, 0])
    clock.t += 6
    w.extend([1])
    clock.t += 4  # the first two are exactly 10 s old: still in
    assert len(w) == 3
    clock.t += 0.5  # now 10.5 s old: out, although nothing was added
    assert w.counts().tolist() == [0, 1, 0]
    clock.t += 100
    assert len(w) == 0 and w.counts().tolist() == [0, 0, 0]


def test_window_both_bounds() -> None:
    clock = FakeClock()
    w = DriftWindow(2, size=3, seconds=5, clock=clock)
    w.extend([0, 0, 0, 1])
    assert w.counts().tolist() == [2, 1]
    clock.t += 6
    assert len(w) == 0


def test_window_needs_a_bound_and_valid_classes() -> None:
    with pytest.raises(ValueError, match="size, a time span"):
        DriftWindow(3)
    w = DriftWindow(3, size=10)
    with pytest.raises(ValueError, match="outside"):
        w.extend([0, 3])
    assert len(w) == 0  # the batch was refused as a whole


def test_window_thread_safety() -> None:
    w = DriftWindow(4, size=100_000)
    per_thread = 5000

    def work(k: int) -> None:
        for _ in range(per_thread):
            w.add(k)
            w.counts()

    threads = [threading.Thread(target=work, args=(i % 4,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(w) == 8 * per_thread
    assert w.counts().tolist() == [2 * per_thread] * 4


def test_window_thread_safety_while_evicting() -> None:
    w = DriftWindow(2, size=50)

    def work() -> None:
        for i in range(3000):
            w.extend([i % 2, 1])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = w.counts()
    assert len(w) == 50 and int(c.sum()) == 50 and (c >= 0).all()


# --- monitor and gauges -----------------------------------------------------------------


def test_monitor_gauges_follow_the_window() -> None:
    ref = {"angry": 0.25, "happy": 0.5, "sad": 0.25}
    m = DriftMonitor("drift-gauges", "1", "face", CLASSES, ref, DriftConfig(size=100))
    assert gauge("emostream_drift_reference_missing", "drift-gauges") == 0
    assert gauge("emostream_drift_window_samples", "drift-gauges") == 0
    assert math.isnan(gauge("emostream_drift_psi", "drift-gauges") or 0.0)
    assert math.isnan(gauge("emostream_drift_js_distance", "drift-gauges") or 0.0)

    m.observe([0, 1, 1, 2])  # exactly the reference mix
    assert m.samples() == 4
    assert gauge("emostream_drift_window_samples", "drift-gauges") == 4
    assert gauge("emostream_drift_psi", "drift-gauges") == pytest.approx(0.0, abs=1e-12)
    assert gauge("emostream_drift_js_distance", "drift-gauges") == pytest.approx(0, abs=1e-7)

    m.observe([1] * 4)  # window [1/8, 6/8, 1/8] vs [1/4, 1/2, 1/4]
    p, q = np.array([1, 6, 1]) / 8, np.array([0.25, 0.5, 0.25])
    by_hand = float(np.sum((p - q) * np.log(p / q)))
    assert gauge("emostream_drift_psi", "drift-gauges") == pytest.approx(by_hand, rel=1e-12)
    assert m.psi() == pytest.approx(by_hand, rel=1e-12)
    assert gauge("emostream_drift_js_distance", "drift-gauges") == pytest.approx(m.js())
    assert 0 < m.js() < 1


def test_monitor_time_window_expires_between_scrapes() -> None:
    clock = FakeClock()
    ref = {"angry": 0.2, "happy": 0.5, "sad": 0.3}
    m = DriftMonitor(
        "drift-expiry", "1", "face", CLASSES, ref, DriftConfig(size=None, seconds=60), clock
    )
    m.observe([1, 1, 1])
    assert gauge("emostream_drift_window_samples", "drift-expiry") == 3
    clock.t += 61
    assert gauge("emostream_drift_window_samples", "drift-expiry") == 0
    assert math.isnan(gauge("emostream_drift_psi", "drift-expiry") or 0.0)
    assert math.isnan(m.js())


def test_reference_keys_in_another_order() -> None:
    ordered = {"angry": 0.1, "happy": 0.6, "sad": 0.3}
    shuffled = {"sad": 0.3, "angry": 0.1, "happy": 0.6}
    a = DriftMonitor("drift-order-a", "1", "face", CLASSES, ordered)
    b = DriftMonitor("drift-order-b", "1", "face", CLASSES, shuffled)
    assert b.reference is not None and b.reference.tolist() == pytest.approx([0.1, 0.6, 0.3])
    for m in (a, b):
        m.observe([0, 0, 1, 2])
    assert a.psi() == pytest.approx(b.psi(), rel=1e-12)
    assert a.js() == pytest.approx(b.js(), rel=1e-12)
    p = np.array([0.5, 0.25, 0.25])
    assert b.psi() == pytest.approx(psi(p, [0.1, 0.6, 0.3]), rel=1e-12)


def test_reference_with_other_classes_is_rejected() -> None:
    with pytest.raises(ValueError, match="exactly"):
        DriftMonitor("drift-bad-ref", "1", "face", CLASSES, {"angry": 0.5, "happy": 0.5})


def test_missing_reference_is_reported_not_guessed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="emostream.drift"):
        m = DriftMonitor("drift-no-ref", "1", "face", CLASSES, None)
        DriftMonitor("drift-no-ref", "1", "face", CLASSES, None)  # a reload: no second warning
    warnings = [r for r in caplog.records if "drift-no-ref" in r.getMessage()]
    assert len(warnings) == 1
    assert "not measured" in warnings[0].getMessage()
    assert "reference_distribution" in warnings[0].getMessage()
    m.observe([0, 1, 2])
    assert gauge("emostream_drift_reference_missing", "drift-no-ref") == 1
    assert gauge("emostream_drift_psi", "drift-no-ref") is None
    assert gauge("emostream_drift_js_distance", "drift-no-ref") is None
    assert gauge("emostream_drift_window_samples", "drift-no-ref") is not None
    assert math.isnan(m.psi()) and math.isnan(m.js())


def test_drift_config_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="size, a time span or both"):
        DriftConfig(size=None, seconds=None)
    assert DriftConfig(size=None, seconds=5).seconds == 5


# --- settings ---------------------------------------------------------------------------


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.drift.size, s.drift.seconds) == (1000, 600.0)
    assert s.drift == DriftConfig(size=1000, seconds=600.0)
    monkeypatch.setenv("EMOSTREAM_DRIFT_WINDOW_SIZE", "")
    monkeypatch.setenv("EMOSTREAM_DRIFT_WINDOW_SECONDS", "30")
    s = Settings()
    assert s.drift == DriftConfig(size=None, seconds=30.0)
    monkeypatch.setenv("EMOSTREAM_DRIFT_WINDOW_SIZE", "50")
    monkeypatch.setenv("EMOSTREAM_DRIFT_WINDOW_SECONDS", "")
    assert Settings().drift == DriftConfig(size=50, seconds=None)


def test_settings_reject_an_unbounded_window(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="EMOSTREAM_DRIFT_WINDOW_SIZE"):
        Settings(drift_window_size=None, drift_window_seconds=None)
    monkeypatch.setenv("EMOSTREAM_DRIFT_WINDOW_SIZE", "")
    monkeypatch.setenv("EMOSTREAM_DRIFT_WINDOW_SECONDS", "none")
    with pytest.raises(ValueError, match="neither bound"):
        Settings()
    with pytest.raises(ValueError):
        Settings(drift_window_size=0)
    with pytest.raises(ValueError):
        Settings(drift_window_seconds=0)


# --- wiring -----------------------------------------------------------------------------


def test_face_analyzer_feeds_its_drift_monitor(repo: ModelRepository) -> None:
    # its own analyzer: the newest monitor for a model owns the gauges, and other tests
    # build analyzers for the same model
    analyzer = FaceAnalyzer.from_settings(Settings(model_root=repo.root))
    card, drift = analyzer.card, analyzer.tally.drift
    labels = {"model": card.name, "version": card.version, "modality": card.modality}
    assert REGISTRY.get_sample_value("emostream_drift_reference_missing", labels) == 0
    before = drift.samples()

    def scored(scores: np.ndarray) -> Scored[FaceScores]:
        job = Job("", 0, None, np.empty(0, np.uint8), FrameInfo(1, 1))
        boxes = [(0, 0, 1, 1)] * len(scores)
        return Scored(job, card.ref, FaceScores(boxes, scores, tuple(card.classes)))

    scores = np.eye(len(card.classes), dtype=np.float32)[[0, 3, 3]]  # 3 faces, classes 0/3/3
    analyzer.tally.observe(scored(scores))
    analyzer.tally.observe(scored(np.zeros((0, len(card.classes)), dtype=np.float32)))
    assert drift.samples() == min(before + 3, drift.window.size or 10**9)
    psi_now = REGISTRY.get_sample_value("emostream_drift_psi", labels)
    assert psi_now is not None and psi_now == pytest.approx(drift.psi())
