"""A session's audio path without WebRTC: real RAVDESS speech, as Opus and G.711 deliver it
(48 kHz and 8 kHz frames of 20 ms), through the resampler and the windower. (That voice
windows do not supersede each other is a broker rule: tests/test_broker.py.)"""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest
from av.audio.frame import AudioFrame
from shared_media import ravdess_file

from emostream.models.vad import create_vad
from emostream.models.voice import VoiceModelConfig
from emostream.stream.audio import Resampler, read_audio
from emostream.stream.voice_track import CHUNK_S, AudioWindows, Due, TimedWindow, window_chunks
from emostream.stream.windows import Windower

PAD_S = 1.0  # silence before the clip
TAIL_S = 3.0  # and after it


def _padded(rate: int) -> tuple[np.ndarray, float]:
    """The clip at ``rate`` as int16, with silence around it; and the clip's length."""
    clip = read_audio(ravdess_file(), rate=rate)
    pad, tail = np.zeros(round(PAD_S * rate)), np.zeros(round(TAIL_S * rate))
    x = np.concatenate([pad, clip, tail])
    return (np.clip(x, -1, 1) * 32767).astype(np.int16), len(clip) / rate


def _frames(samples: np.ndarray, rate: int, pts0: int = 123_456) -> list[AudioFrame]:
    """20 ms frames as aiortc's decoders hand them over (s16 mono, RTP-like pts)."""
    n = rate // 50
    out = []
    for i in range(0, len(samples) - n + 1, n):
        f = AudioFrame.from_ndarray(samples[i : i + n].reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = rate
        f.pts = pts0 + i
        f.time_base = fractions.Fraction(1, rate)
        out.append(f)
    return out


def _windower() -> Windower:
    """The windows a session makes (the card's defaults), with the WebRTC VAD (no file)."""
    config = VoiceModelConfig(vad="webrtc")
    return Windower.for_model(create_vad(config, Path(".")), None, config)


def _windows(frames: list[AudioFrame], rate: int) -> list[TimedWindow]:
    windower = _windower()
    aw, due = AudioWindows(windower), Due(windower)
    timed = [(f, due.frame(f)[0]) for f in frames]
    per_chunk = round(CHUNK_S * 50)
    out: list[TimedWindow] = []
    for i in range(0, len(frames), per_chunk):
        out += aw.process(timed[i : i + per_chunk], arrived=1000.0 + i / 50)
    return out


@pytest.mark.data
@pytest.mark.parametrize("rate", [48000, 8000], ids=["opus-48k", "g711-8k"])
def test_speech_is_found_in_the_clip_and_not_in_the_silence_around_it(rate: int) -> None:
    samples, clip_s = _padded(rate)
    timed = _windows(_frames(samples, rate), rate)
    windows = [t.window for t in timed]
    assert windows, "no window from 7 s of audio"
    assert all(len(w.samples) == windows[0].samples.shape[0] for w in windows)
    assert windows[0].start == pytest.approx(0.0, abs=1e-6)  # media time from the first frame
    hops = np.diff([w.start for w in windows])
    assert np.allclose(hops, hops[0], atol=1e-3)
    speech = [w for w in windows if w.speech]
    assert speech, "the clip's speech was not found"
    assert all(w.end > PAD_S and w.start < PAD_S + clip_s for w in speech)  # overlap the clip
    in_tail = [w for w in windows if w.start >= PAD_S + clip_s + 0.2]
    assert in_tail and not any(w.speech for w in in_tail)
    # the 16 kHz window holds the clip's samples, not silence
    assert max(float(np.abs(w.samples).max()) for w in speech) > 0.05


def test_a_window_ended_when_its_last_sample_arrived() -> None:
    rate = 48000
    frames = _frames(np.zeros(rate * 3, np.int16), rate)
    windower = _windower()
    aw, due = AudioWindows(windower), Due(windower)
    got = aw.process(
        [(f, due.frame(f)[0]) for f in frames], arrived=500.0
    )  # all 3 s arrived at once, at t=500
    assert got and all(not t.window.speech for t in got)
    last = got[-1]
    # the chunk's media ends at 3.0 s: a window that ended earlier ended that much sooner
    assert last.ended == pytest.approx(500.0 - (3.0 - last.window.end), abs=1e-6)
    assert all(t.ended <= 500.0 for t in got)


@pytest.mark.data
def test_the_end_of_a_track_gets_a_last_window_over_its_tail() -> None:
    """2.3 s of speech: hops end windows at 1.5 and 2.0 s; the end adds one ending at 2.3 s,
    so the last 0.3 s of a call is scored too (with its resampler's held-back samples)."""
    rate = 48000
    samples, _ = _padded(rate)
    frames = _frames(samples[round(PAD_S * rate) :][: round(2.3 * rate)], rate)
    windower = _windower()
    aw, due = AudioWindows(windower), Due(windower)
    got = aw.process([(f, due.frame(f)[0]) for f in frames], arrived=100.0)
    assert [round(t.window.end, 2) for t in got] == [1.5, 2.0]
    last = aw.finish(arrived=101.0)
    assert len(last) == 1 and last[0].ended == 101.0
    assert last[0].window.end == pytest.approx(2.3, abs=0.01)
    assert last[0].window.end - last[0].window.start == pytest.approx(1.5, abs=1e-3)
    assert last[0].window.speech  # the clip's own speech


def test_a_gap_in_the_timestamps_restarts_the_windows_at_the_sender_time() -> None:
    rate = 48000
    first = _frames(np.zeros(rate * 2, np.int16), rate, pts0=0)
    later = _frames(np.zeros(rate * 2, np.int16), rate, pts0=rate * 5)  # 3 s of nothing
    got = _windows(first + later, rate)
    starts = [t.window.start for t in got]
    assert any(s >= 5.0 for s in starts)
    assert not any(2.0 < s < 5.0 - 1e-6 for s in starts)  # no window across the gap


def test_a_chunk_goes_as_soon_as_a_window_has_ended() -> None:
    """Windows end every 0.5 s from 1.5 s: the frame just past each end sends its chunk."""
    due = Due(_windower())
    frames = _frames(np.zeros(48000 * 3, np.int16), 48000)
    early = [round(i * 0.02 + 0.02, 3) for i, f in enumerate(frames) if due.frame(f)[1]]
    assert early == [1.52, 2.02, 2.52]
    due = Due(_windower())  # after a gap the windows start again one window later
    gap = _frames(np.zeros(48000 * 2, np.int16), 48000, pts0=0)
    gap += _frames(np.zeros(48000 * 2, np.int16), 48000, pts0=48000 * 5)
    early = [round(float(f.pts or 0) / 48000 + 0.02, 3) for f in gap if due.frame(f)[1]]
    assert early == [1.52, 6.52]


def test_the_resampler_takes_opus_stereo_and_g711_alike() -> None:
    stereo = AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
    stereo.sample_rate = 48000
    mono8k = AudioFrame.from_ndarray(np.zeros((1, 160), np.int16), format="s16", layout="mono")
    mono8k.sample_rate = 8000
    r48, r8 = Resampler(), Resampler()
    n48 = sum(len(r48(stereo)) for _ in range(10)) + len(r48(None))
    n8 = sum(len(r8(mono8k)) for _ in range(10)) + len(r8(None))
    assert n48 == pytest.approx(3200, abs=64) and n8 == pytest.approx(3200, abs=64)


def _chunked(frames: list[AudioFrame], windower: Windower) -> list[list[tuple[AudioFrame, float]]]:
    due = Due(windower)
    timed = [(f, due.frame(f)[0]) for f in frames]
    n = round(CHUNK_S * 50)
    return [timed[i : i + n] for i in range(0, len(timed), n)]


@pytest.mark.data
def test_tracks_windowed_together_get_the_windows_each_gets_alone() -> None:
    """``window_chunks`` (the thread hop every track of a process shares) gives each track
    what its own ``process`` gives: 48 and 8 kHz, offset starts, uneven chunk counts."""
    sources = []
    for k, rate in enumerate([48000, 8000, 8000, 48000]):
        samples, _ = _padded(rate)
        sources.append(_frames(samples[k * rate // 3 :][: rate * (4 + k)], rate))
    alone = []
    for frames in sources:
        windower = _windower()
        aw = AudioWindows(windower)
        alone.append([t for chunk in _chunked(frames, windower) for t in aw.process(chunk, 0.0)])
    tracks = [AudioWindows(_windower()) for _ in sources]
    chunked = [_chunked(frames, t.windower) for frames, t in zip(sources, tracks, strict=True)]
    together: list[list[TimedWindow]] = [[] for _ in sources]
    for step in range(max(len(c) for c in chunked)):
        now = [(i, tracks[i], c[step]) for i, c in enumerate(chunked) if step < len(c)]
        results = window_chunks(tracks[0].windower.vad, [(t, c, 0.0) for _, t, c in now])
        for (i, _, _), result in zip(now, results, strict=True):
            assert not isinstance(result, Exception)
            together[i] += result
    assert any(w.window.speech for ws in together for w in ws)
    for a, b in zip(alone, together, strict=True):
        assert [(w.window.start, w.window.speech, w.ended) for w in a] == [
            (w.window.start, w.window.speech, w.ended) for w in b
        ]
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.window.samples, y.window.samples)


def test_a_track_whose_audio_fails_fails_alone_in_its_batch() -> None:
    """One track's frame that its resampler refuses (a layout it was not set up for) is
    that track's exception; the other track of the batch gets its windows and goes on."""
    good, bad = AudioWindows(_windower()), AudioWindows(_windower())
    bad.process([(f, i * 0.02) for i, f in enumerate(_frames(np.zeros(960, np.int16), 48000))], 0)
    stereo = AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
    stereo.sample_rate = 44100
    first, second = (_frames(np.zeros(48000, np.int16), 48000, pts0=p) for p in (0, 48000))
    out = window_chunks(
        good.windower.vad,
        [(bad, [(stereo, 0.02)], 0.0), (good, [(f, i * 0.02) for i, f in enumerate(first)], 0.0)],
    )
    assert isinstance(out[0], Exception)
    assert out[1] == []  # 1 s: no window has ended yet
    later = good.process([(f, 1 + i * 0.02) for i, f in enumerate(second)], 0.0)
    assert [round(t.window.end, 2) for t in later] == [1.5]  # 2.0: a few samples short
