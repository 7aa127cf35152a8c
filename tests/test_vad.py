"""Both VADs on real RAVDESS speech against silence, and the Silero import."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.models.repository import ModelMissingError, ModelRepository, sha256_file
from emostream.models.vad import Vad, create_vad
from emostream.models.vad.silero_import import MEMBER, NAME, WHEEL_SHA256

from voice_models import clip, config, padded, ravdess, voice_repo  # noqa: F401

PAD_S = 1.0


def _flags(vad: Vad, x: np.ndarray) -> np.ndarray:
    f = vad.frame_samples
    n = len(x) // f
    return vad.stream()(x[: n * f].reshape(n, f)) >= vad.threshold


@pytest.fixture(params=["silero", "webrtc"])
def vad(request: pytest.FixtureRequest, voice_repo: ModelRepository) -> Vad:  # noqa: F811
    return create_vad(config(vad=request.param), voice_repo.root)


def test_speech_is_found_and_the_silence_around_it_is_not(vad: Vad, clip: np.ndarray) -> None:  # noqa: F811
    x = padded(clip, PAD_S)
    flags = _flags(vad, x)
    f = vad.frame_samples
    pad_frames = int(PAD_S * 16000) // f
    silence = np.concatenate([flags[: pad_frames - 2], flags[-(pad_frames - 2) :]])
    assert silence.mean() < 0.02, f"{vad.name}: {silence.mean():.1%} of the padding is 'speech'"
    # RAVDESS: the sentence is in the middle second or so of the clip
    middle = flags[len(flags) // 2 - 8 : len(flags) // 2 + 8]
    assert middle.mean() > 0.8, f"{vad.name}: only {middle.mean():.0%} of mid-sentence"
    assert 0.15 < flags.mean() < 0.6


def test_silero_is_not_fooled_by_a_change_of_noise_floor(
    voice_repo: ModelRepository,  # noqa: F811
    clip: np.ndarray,  # noqa: F811
) -> None:
    """White noise at -70 dBFS after a sentence (RAVDESS' own floor is about -60 dBFS):
    Silero calls it silence; the WebRTC VAD at modes 0-2 calls most of it speech (see
    docs/BENCHMARKS.md, *padding FP*), one reason Silero is the default."""
    vad = create_vad(config(vad="silero"), voice_repo.root)
    flags = _flags(vad, padded(clip, PAD_S, noise=3e-4))
    pad_frames = int(PAD_S * 16000) // vad.frame_samples
    assert flags[-(pad_frames - 2) :].mean() < 0.02
    assert flags[: pad_frames - 2].mean() < 0.02


def test_a_stream_keeps_state_per_track(vad: Vad, clip: np.ndarray) -> None:  # noqa: F811
    """Two tracks through one detector: each gets what it would alone."""
    x = clip[: len(clip) // vad.frame_samples * vad.frame_samples]
    alone = _flags(vad, x)
    a, b = vad.stream(), vad.stream()
    f = vad.frame_samples
    frames = x.reshape(-1, f)
    got_a, got_b = [], []
    for k in range(0, len(frames), 10):  # interleave chunks of the two tracks
        got_a.append(a(frames[k : k + 10]))
        got_b.append(b(np.zeros_like(frames[k : k + 10])))
    assert np.array_equal(np.concatenate(got_a) >= vad.threshold, alone)
    assert not (np.concatenate(got_b) >= vad.threshold).any()


def test_silero_is_the_wheels_file_with_its_card(voice_repo: ModelRepository) -> None:  # noqa: F811
    card = voice_repo.card(NAME, "1")
    assert card.task == "voice-activity" and card.licence.startswith("MIT")
    assert card.source.sha256 == WHEEL_SHA256 and card.source.file == MEMBER
    assert card.sha256 == sha256_file(voice_repo.onnx_path(NAME, "1"))
    assert voice_repo.resolve(NAME) == "1"


def test_silero_not_pulled_names_the_command(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with pytest.raises(ModelMissingError, match="emostream models pull voice-activity"):
        create_vad(config(vad="silero"), tmp_path)


def test_many_streams_at_once_give_what_each_gives_alone(
    vad: Vad,
    clip: np.ndarray,  # noqa: F811
) -> None:
    """``run`` (Silero: one batch per frame step across the streams) keeps each stream's
    state its own: uneven frame counts, an empty one, and a second call that goes on."""
    f = vad.frame_samples
    rng = np.random.default_rng(3)
    tracks = [padded(clip, 0.5, noise=3e-4, seed=i)[i * 997 :] for i in range(4)]
    tracks.append(rng.normal(0, 0.1, 40 * f).astype(np.float32))  # loud noise
    frames = [t[: len(t) // f * f].reshape(-1, f) for t in tracks]
    alone = [vad.stream()(x) for x in frames]
    streams = [vad.stream() for _ in frames]
    cuts = [0, 1, 0, 7, len(frames[4])]  # the first call: uneven counts, one empty
    first = vad.run([(s, x[:c]) for s, x, c in zip(streams, frames, cuts, strict=True)])
    rest = vad.run([(s, x[c:]) for s, x, c in zip(streams, frames, cuts, strict=True)])
    for a, b, c, expected in zip(first, rest, cuts, alone, strict=True):
        assert len(a) == c
        np.testing.assert_allclose(np.concatenate([a, b]), expected, atol=1e-6)
