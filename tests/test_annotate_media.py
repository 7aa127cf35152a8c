"""Issue 23: ``analyze --annotate`` keeps a video's sound, and says why an audio file gets
no annotated copy. Short generated media (a moving square, a 440 Hz tone): no shared data."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.audio.stream import AudioStream
from typer.testing import CliRunner

from emostream.cli import app
from emostream.models.repository import ModelRepository
from emostream.remux_audio import fits

RATE = 16000


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _video_with_tone(path: Path, audio_codec: str, seconds: float = 1.0) -> Path:
    """15 fps of a moving square with a tone in ``audio_codec``."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=15)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        sound = out.add_stream(audio_codec, rate=RATE)
        assert isinstance(sound, AudioStream)
        sound.layout = "mono"
        for i in range(int(seconds * 15)):
            image = np.zeros((120, 160, 3), np.uint8)
            image[40:80, 5 * i : 5 * i + 40] = 255
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        fmt = "s16" if audio_codec.startswith("pcm") else "fltp"
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=RATE)
        tone = av.AudioFrame.from_ndarray(_tone(seconds)[None, :], format="flt", layout="mono")
        tone.sample_rate, tone.pts, tone.time_base = RATE, 0, Fraction(1, RATE)
        for chunk in [*resampler.resample(tone), *resampler.resample(None)]:
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return path


def _streams(path: Path) -> tuple[int, str | None, float]:
    """Video frames, the audio codec (None: no audio) and the audio's seconds."""
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return frames, None, 0.0
        codec = c.streams.audio[0].codec_context.name
        samples = sum(f.samples / f.sample_rate for f in c.decode(audio=0))
    return frames, codec, samples


@pytest.fixture()
def cli(repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(repo.root))
    return CliRunner()


@pytest.mark.parametrize(
    ("suffix", "codec", "kept"), [(".mp4", "aac", "aac"), (".mkv", "pcm_s16le", "aac")]
)
def test_annotated_video_keeps_its_sound(
    cli: CliRunner, tmp_path: Path, suffix: str, codec: str, kept: str
) -> None:
    source = _video_with_tone(tmp_path / f"tone{suffix}", codec)
    out = tmp_path / "annotated.mp4"
    r = cli.invoke(app, ["analyze", "-q", "--annotate", str(out), str(source)])
    assert r.exit_code == 0, r.output
    frames, audio, seconds = _streams(out)
    assert frames == 15
    assert audio == kept  # copied when it fits mp4, else re-encoded to AAC
    assert seconds == pytest.approx(1.0, abs=0.1)


def test_codecs_that_fit_mp4_are_copied() -> None:
    assert fits("aac", ".mp4") and fits("mp3", ".MP4")
    assert not fits("pcm_s16le", ".mp4") and not fits("vorbis", ".mp4")
    assert not fits("aac", ".avi")


def test_audio_only_with_annotate_says_nothing_is_written(cli: CliRunner, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as out:
        s = out.add_stream("pcm_s16le", rate=RATE)
        s.layout = "mono"
        tone = av.AudioFrame.from_ndarray(
            (_tone(1.0) * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        tone.sample_rate = RATE
        out.mux(s.encode(tone))
        out.mux(s.encode(None))
    target = tmp_path / "out"
    r = cli.invoke(app, ["analyze", "-q", "--annotate", str(target), str(wav)])
    assert "annotate_skipped" in r.stderr and "audio only" in r.stderr, r.output
    assert not target.exists() or not any(target.iterdir())
