"""`emostream analyze` on audio: flac, 48 kHz wav, mp3, ogg, audio-only webm, m4a and mp4
(made from a RAVDESS clip with PyAV), the audio of a video, tags that are not UTF-8, bad
files, and no voice model."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from shared_media import talking_video
from typer.testing import CliRunner

from emostream.cli import EXIT_FAILED_FILES, EXIT_MODEL_MISSING, app
from emostream.models.repository import ModelRepository
from emostream.stream.media import kind_of

from voice_models import clip, has_voice_model, padded, ravdess, voice_repo  # noqa: F401


def _write_audio(
    path: Path, samples: np.ndarray, codec: str, rate: int, title: str | None = None
) -> Path:
    """16 kHz float samples as ``codec`` at ``rate`` (PyAV resamples), stereo for mp3/ogg;
    the container by ``path``'s suffix; ``title``: a Latin-1 title tag (not UTF-8)."""
    layout = "mono" if codec in ("flac", "pcm_s16le") else "stereo"
    with av.open(str(path), "w", metadata_encoding="latin-1") as out:
        if title is not None:
            out.metadata["title"] = title
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout  # type: ignore[union-attr]
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)  # type: ignore[union-attr]
        pts = 0
        for i in range(0, len(samples), 4000):
            chunk = samples[i : i + 4000].astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = 16000
            frame.pts = pts
            frame.time_base = Fraction(1, 16000)
            pts += chunk.shape[1]
            for f in resampler.resample(frame):
                for packet in stream.encode(f):  # type: ignore[union-attr]
                    out.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):  # type: ignore[union-attr]
                out.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            out.mux(packet)
    return path


FORMATS = {
    "clip.flac": ("flac", 16000),
    "clip-48k.wav": ("pcm_s16le", 48000),
    "clip.mp3": ("mp3", 44100),
    "clip.ogg": ("libopus", 48000),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, clip: np.ndarray) -> dict[str, Path]:  # noqa: F811
    folder = tmp_path_factory.mktemp("audio")
    x = padded(clip, 1.5)
    return {name: _write_audio(folder / name, x, c, r) for name, (c, r) in FORMATS.items()}


@pytest.fixture()
def cli(voice_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> CliRunner:  # noqa: F811
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(voice_repo.root))
    return CliRunner()


def _messages(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_audio_format_gives_one_voice_message_per_window(
    cli: CliRunner,
    files: dict[str, Path],
    has_voice_model: ModelRepository,  # noqa: F811
    name: str,
) -> None:
    r = cli.invoke(app, ["analyze", "--format", "jsonl", str(files[name])])
    assert r.exit_code == 0, r.stderr
    msgs = _messages(r.stdout)
    assert msgs and all(m["type"] == "voice" and m["source"] == str(files[name]) for m in msgs)
    starts = [m["start"] for m in msgs]
    assert starts[:4] == [0.0, 0.5, 1.0, 1.5] and starts == sorted(starts)
    assert all(m["end"] - m["start"] == pytest.approx(1.5, abs=1e-3) for m in msgs[:-1])
    speech = [m for m in msgs if m["speech"]]
    silent = [m for m in msgs if not m["speech"]]
    assert speech and silent, "the sentence is speech, the padding silence"
    assert not msgs[0]["speech"] and not msgs[-1]["speech"]
    for m in speech:
        assert m["label"] in m["scores"] and m["model"].startswith("voice-emotion/")
        assert sum(m["scores"].values()) == pytest.approx(1, abs=1e-3)
    assert all(not m.get("scores") and m.get("label") is None for m in silent)


def test_a_video_with_sound_gives_faces_and_voice(
    cli: CliRunner,
    media: Path,
    tmp_path: Path,
    clip: np.ndarray,  # noqa: F811
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    video = talking_video(tmp_path / "talk.mp4", media, clip)
    r = cli.invoke(app, ["analyze", "--format", "jsonl", "--quiet", str(video)])
    assert r.exit_code == 0, r.stderr
    kinds = [m["type"] for m in _messages(r.stdout)]
    assert kinds.count("face") >= 20 and kinds.count("voice") >= 2


def test_bad_audio_files_fail_with_a_reason(
    cli: CliRunner,
    files: dict[str, Path],
    tmp_path: Path,
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    fake = tmp_path / "fake.wav"
    fake.write_text("RIFF? no, this is text\n" * 50)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    r = cli.invoke(
        app, ["analyze", "--format", "jsonl", str(fake), str(empty), str(files["clip.flac"])]
    )
    assert r.exit_code == EXIT_FAILED_FILES
    assert {Path(m["source"]).name for m in _messages(r.stdout)} == {"clip.flac"}
    assert "fake.wav" in r.stderr and "empty.flac" in r.stderr
    assert "unsupported_format: " in r.stderr and "no_audio" in r.stderr


def test_audio_without_a_voice_model_exits_with_the_train_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, Path],
) -> None:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_path))  # no model at all
    r = CliRunner().invoke(app, ["analyze", str(files["clip.flac"])])
    assert r.exit_code == EXIT_MODEL_MISSING
    assert "emostream train voice --data" in r.stderr


def test_an_audio_file_with_an_unknown_suffix_is_probed(
    cli: CliRunner,
    files: dict[str, Path],
    tmp_path: Path,
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    recording = tmp_path / "call-0042.bin"
    recording.write_bytes(files["clip.flac"].read_bytes())
    text = tmp_path / "notes.log"
    text.write_text("not audio\n" * 100)
    r = cli.invoke(app, ["analyze", "--format", "jsonl", str(recording), str(text)])
    assert r.exit_code == EXIT_FAILED_FILES  # the text file
    msgs = _messages(r.stdout)
    assert msgs and {m["type"] for m in msgs} == {"voice"}
    assert "unsupported_file" in r.stderr and "notes.log" in r.stderr


def test_the_text_format_names_each_window(
    cli: CliRunner,
    files: dict[str, Path],
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    r = cli.invoke(app, ["analyze", str(files["clip.flac"])])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("@0.00-1.50s: voice no speech")
    assert any(": voice " in line and "no speech" not in line for line in lines)


#: a browser's MediaRecorder (WebM with Opus) and phones' recorders (AAC in MP4/M4A)
AUDIO_IN_VIDEO_CONTAINERS = {
    "recorder.webm": ("libopus", 48000),
    "memo.m4a": ("aac", 44100),
    "memo.mp4": ("aac", 44100),
}


def test_audio_only_video_containers_are_audio(
    cli: CliRunner,
    tmp_path: Path,
    clip: np.ndarray,  # noqa: F811
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    x = padded(clip, 1.0)
    paths = [
        _write_audio(tmp_path / name, x, codec, rate)
        for name, (codec, rate) in AUDIO_IN_VIDEO_CONTAINERS.items()
    ]
    assert [kind_of(p) for p in paths] == ["audio"] * 3
    r = cli.invoke(app, ["analyze", "--format", "jsonl", *map(str, paths)])
    assert r.exit_code == 0, r.stderr
    assert "corrupt_video" not in r.stderr
    msgs = _messages(r.stdout)
    assert {Path(m["source"]).name for m in msgs if m["speech"]} == set(AUDIO_IN_VIDEO_CONTAINERS)


def test_a_tag_that_is_not_utf8_is_read_and_later_files_still_run(
    cli: CliRunner,
    files: dict[str, Path],
    tmp_path: Path,
    clip: np.ndarray,  # noqa: F811
    has_voice_model: ModelRepository,  # noqa: F811
) -> None:
    x = padded(clip, 1.0)
    tagged = [
        _write_audio(
            tmp_path / "caf\u00e9.wav", x, "pcm_s16le", 16000, title="Caf\u00e9 M\u00fcller"
        ),
        _write_audio(tmp_path / "tagged.mp3", x, "mp3", 44100, title="r\u00e9ception"),
    ]
    with pytest.raises(UnicodeDecodeError):  # what made `analyze` end with a traceback
        av.open(str(tagged[0])).close()
    r = cli.invoke(
        app, ["analyze", "--format", "jsonl", *map(str, tagged), str(files["clip.flac"])]
    )
    assert r.exit_code == 0, r.stderr
    sources = {Path(m["source"]).name for m in _messages(r.stdout) if m["speech"]}
    assert sources == {"caf\u00e9.wav", "tagged.mp3", "clip.flac"}


def test_one_files_unexpected_failure_does_not_end_the_run(
    cli: CliRunner,
    files: dict[str, Path],
    has_voice_model: ModelRepository,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import emostream.analyze as analyze

    real = analyze.analyze_audio

    def flaky(tools, path, *args, **kw):  # type: ignore[no-untyped-def]
        if path.suffix == ".mp3":
            raise RuntimeError("a bug in a library")
        return real(tools, path, *args, **kw)

    monkeypatch.setattr(analyze, "analyze_audio", flaky)
    r = cli.invoke(
        app, ["analyze", "--format", "jsonl", str(files["clip.mp3"]), str(files["clip.flac"])]
    )
    assert r.exit_code == EXIT_FAILED_FILES
    assert "analysis_failed" in r.stderr and "a bug in a library" in r.stderr
    assert {Path(m["source"]).name for m in _messages(r.stdout)} == {"clip.flac"}
