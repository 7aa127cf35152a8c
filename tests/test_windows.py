"""The windower: count and timing of windows, the speech flag on a real clip, gaps, memory."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.models.repository import ModelRepository
from emostream.models.vad import Vad, create_vad
from emostream.stream.windows import Window, Windower, file_windows

from voice_models import clip, config, padded, ravdess, voice_repo  # noqa: F401

RATE = 16000
WIN, HOP = 24000, 8000


@pytest.fixture(scope="module", params=["silero", "webrtc"])
def vad(request: pytest.FixtureRequest, voice_repo: ModelRepository) -> Vad:  # noqa: F811
    return create_vad(config(vad=request.param), voice_repo.root)


def _windows(vad: Vad, x: np.ndarray, chunk: int = 16000) -> list[Window]:
    return list(file_windows(x, Windower(vad, WIN, HOP), chunk))


@pytest.mark.parametrize("seconds", [1.5, 2.0, 3.3, 10.0])
def test_one_window_per_hop_then_one_for_the_tail(vad: Vad, seconds: float) -> None:
    x = np.zeros(int(seconds * RATE), np.float32)
    got = _windows(vad, x)
    full = 1 + (len(x) - WIN) // HOP
    tail = (len(x) - WIN) % HOP != 0
    assert len(got) == full + tail
    for i, w in enumerate(got[:full]):
        assert w.start == pytest.approx(i * 0.5) and w.end == pytest.approx(i * 0.5 + 1.5)
        assert w.samples.shape == (WIN,) and w.samples.dtype == np.float32
    assert got[-1].end == pytest.approx(seconds)
    assert not any(w.speech for w in got)


def test_chunk_sizes_do_not_change_the_windows(vad: Vad, clip: np.ndarray) -> None:  # noqa: F811
    x = padded(clip, 1.0)
    a, b = _windows(vad, x, 16000), _windows(vad, x, 317)
    assert [(w.start, w.end, w.speech, w.voiced) for w in a] == [
        (w.start, w.end, w.speech, w.voiced) for w in b
    ]
    assert all(np.array_equal(u.samples, v.samples) for u, v in zip(a, b, strict=True))


def test_speech_windows_are_where_the_sentence_is(vad: Vad, clip: np.ndarray) -> None:  # noqa: F811
    x = padded(clip, 2.0)
    got = _windows(vad, x)
    flags = [w.speech for w in got]
    assert not flags[0] and not flags[-1], "the padding is silence"
    assert any(flags), "the sentence is speech"
    speech = [w for w in got if w.speech]
    # every speech window overlaps the clip itself (2.0 s .. 2.0 s + its length)
    end = 2.0 + len(clip) / RATE
    assert all(w.end > 2.0 and w.start < end for w in speech)
    assert np.array_equal(got[0].samples, x[:WIN])


def test_a_short_track_gives_one_padded_window(vad: Vad) -> None:
    got = _windows(vad, np.zeros(RATE // 2, np.float32))
    assert len(got) == 1
    assert (got[0].start, got[0].end) == (0.0, 0.5)
    assert got[0].samples.shape == (WIN,)


def test_media_time_is_kept_and_a_gap_restarts(vad: Vad) -> None:
    w = Windower(vad, WIN, HOP)
    chunk = np.zeros(4000, np.float32)
    out: list[Window] = []
    for k in range(8):  # 2 s from t = 10 s
        out += w.push(chunk, 10.0 + k * 0.25)
    assert [(x.start, x.end) for x in out] == [(10.0, 11.5), (10.5, 12.0)]
    out = []
    for k in range(8):  # a jump of 5 s: a new run from 17 s, no window across the gap
        out += w.push(chunk, 17.0 + k * 0.25)
    assert [(x.start, x.end) for x in out] == [(17.0, 18.5), (17.5, 19.0)]


def test_memory_is_bounded(vad: Vad) -> None:
    w = Windower(vad, WIN, HOP)
    rng = np.random.default_rng(1)
    count = 0
    for _ in range(600):  # 60 s in 100 ms chunks
        count += len(w.push(rng.normal(0, 0.01, 1600).astype(np.float32)))
        assert w.held_samples <= WIN + vad.frame_samples
    assert count == 1 + (60 * RATE - WIN) // HOP
