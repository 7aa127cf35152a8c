"""``emostream train voice``: corpus readers by file name, speaker-independent splits, the
telephone line, and a tiny real run that exports, registers and passes the serving check."""

from __future__ import annotations

import json
import logging
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("mlflow")

from emostream.cli import app
from emostream.cli.common import EXIT_USAGE
from emostream.models.card import AudioInput, ModelCard
from emostream.models.check import ModelRefused, load_checked
from emostream.models.repository import ModelRepository
from emostream.stream.audio import read_audio
from emostream.training.mlflow_store import VERSION_TAG, Tracking
from emostream.training.train_config import ConfigError
from emostream.training.voice_augment import (
    AugmentConfig,
    _compand,
    augment_wave,
    spec_augment,
    telephone,
)
from emostream.training.voice_config import load_voice_config
from emostream.training.voice_data import (
    CLASSES,
    DataError,
    keep_classes,
    load_waves,
    scan,
    speaker_split,
)
from emostream.training.voice_windows import FRAMES, WINDOW, eval_windows, features

runner = CliRunner()
NAME = "voice-emotion"
#: one real clip of each corpus's naming (the names are real file names of each corpus)
NAMES = {
    "Actor_12/03-01-05-01-01-01-12.wav": ("ravdess", "ravdess:12", "angry"),
    "Actor_07/03-01-08-02-02-02-07.wav": ("ravdess", "ravdess:07", "surprised"),
    "TESS/OAF_back_angry.wav": ("tess", "tess:OAF", "angry"),
    "TESS/YAF_dog_ps.wav": ("tess", "tess:YAF", "surprised"),
    "TESS/OAF_bath_fear.wav": ("tess", "tess:OAF", "fearful"),
    "crema/1001_DFA_ANG_XX.wav": ("crema-d", "crema-d:1001", "angry"),
    "crema/1091_TSI_NEU_HI.wav": ("crema-d", "crema-d:1091", "neutral"),
    "emodb/03a01Fa.wav": ("emo-db", "emo-db:03", "happy"),
    "emodb/16b10Lb.wav": ("emo-db", "emo-db:16", "bored"),
    "emodb/08a02Wb.wav": ("emo-db", "emo-db:08", "angry"),
}


@pytest.fixture(scope="module")
def ravdess(data_root: Path) -> Path:
    path = data_root / "ravdess"
    if not path.is_dir():
        pytest.skip(f"shared data not found: {path} (EMOSTREAM_DATA needs ravdess/)")
    return path


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def corpora(ravdess: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real RAVDESS speech written under each corpus's file names, 48 kHz WAV (a user's
    copy) for the RAVDESS names, 16 kHz for the others."""
    root = tmp_path_factory.mktemp("corpora")
    speech = read_audio(next(iter(sorted(ravdess.glob("Actor_01/*.flac")))))
    up = np.interp(np.arange(len(speech) * 3) / 3, np.arange(len(speech)), speech)
    for name in NAMES:
        if name.startswith("Actor_"):
            _write_wav(root / name, up, 48000)
        else:
            _write_wav(root / name, speech, 16000)
    (root / "TESS" / "notes.wav").write_bytes(b"")  # named as no corpus: skipped
    return root


def test_each_corpus_naming_reads_to_speaker_and_emotion(corpora: Path) -> None:
    clips = scan(corpora)
    got = {str(c.path.relative_to(corpora)): (c.corpus, c.speaker, c.emotion) for c in clips}
    assert got == NAMES
    for sub, corpus in (("TESS", "tess"), ("crema", "crema-d"), ("emodb", "emo-db")):
        assert {c.corpus for c in scan(corpora / sub, corpus)} == {corpus}
    # EMO-DB's boredom has no RAVDESS class: the model's clips leave it out
    assert "bored" not in {c.emotion for c in keep_classes(clips)}
    assert len(keep_classes(clips)) == len(clips) - 1


def test_48k_wav_and_16k_flac_decode_to_the_same_16k_samples(corpora: Path, ravdess: Path) -> None:
    flac = next(iter(sorted(ravdess.glob("Actor_01/*.flac"))))
    wav48 = corpora / "Actor_12/03-01-05-01-01-01-12.wav"
    a, b = (w for w in load_waves(scan(flac.parent)[:1] + scan(wav48.parent), progress=False))
    assert abs(len(a) - len(b)) <= 16  # one resampler's latency at most
    n = min(len(a), len(b)) - 100
    assert np.corrcoef(a[100:n], b[100:n])[0, 1] > 0.99


def test_unreadable_folders_are_data_errors_that_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        scan(tmp_path / "absent")
    (tmp_path / "clip.wav").write_bytes(b"RIFF")
    (tmp_path / "02-01-05-01-01-01-12.wav").write_bytes(b"")  # RAVDESS video-only: not ours
    with pytest.raises(DataError, match=r"RAVDESS .*TESS .*CREMA-D .*EMO-DB"):
        scan(tmp_path)
    with pytest.raises(DataError, match="unknown corpus"):
        scan(tmp_path, "iemocap")


def test_splits_never_put_one_speaker_on_two_sides(ravdess: Path) -> None:
    clips = scan(ravdess)
    assert len(clips) == 1200 and {c.emotion for c in clips} == set(CLASSES)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = [f"{i:02d}" for i in rng.permutation(np.arange(1, 21))]
        split = speaker_split(clips, ids[:4], ids[4:6])
        parts = [split.speakers(p) for p in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(split.train) + len(split.val) + len(split.test) == len(clips)
        assert {c.speaker.split(":")[1] for c in split.test} == set(ids[:4])
    with pytest.raises(DataError, match="named for both"):
        speaker_split(clips, ["01"], ["01"])
    with pytest.raises(DataError, match="'99' is not in the data"):
        speaker_split(clips, ["99"], [])


def test_the_telephone_line_is_band_limited_and_keeps_the_speech(ravdess: Path) -> None:
    x = read_audio(sorted(ravdess.glob("Actor_02/*.flac"))[10])
    y = telephone(x, "mu")
    z = telephone(x, "a")
    assert len(y) == len(z) == len(x)
    for out in (y, z):
        spec = np.abs(np.fft.rfft(out)) ** 2
        freqs = np.fft.rfftfreq(len(out), 1 / 16000)
        assert spec[freqs > 4200].sum() < 1e-3 * spec.sum()  # nothing above the 8 kHz Nyquist
        assert spec[(freqs > 0) & (freqs < 150)].sum() < 0.05 * spec.sum()  # high-passed
        band = (freqs > 400) & (freqs < 3300)  # the speech a call carries is still there
        kept = spec[band].sum() / (np.abs(np.fft.rfft(x))[band] ** 2).sum()
        assert 0.7 < kept < 1.4
    for law in ("mu", "a"):  # 8-bit G.711 keeps about 35 dB of signal to quantisation noise
        c = _compand(x, law)
        assert 10 * np.log10(np.sum(x**2) / np.sum((c - x) ** 2)) > 25
    cfg = AugmentConfig(noise=1.0, telephone=1.0)
    rng = np.random.default_rng(1)
    window = x[:WINDOW]
    aug = augment_wave(window, cfg, rng)
    assert aug.shape == window.shape and aug.dtype == np.float32 and np.abs(aug).max() <= 1
    assert not np.allclose(aug, window)


def test_windows_and_spec_augment_shapes(ravdess: Path) -> None:
    import torch

    x = read_audio(sorted(ravdess.glob("Actor_03/*.flac"))[0])
    windows = eval_windows(x, (0, len(x)))
    assert windows.shape[1] == WINDOW and len(windows) >= 3  # a 3.5 s clip, a 0.5 s hop
    feats = features(windows)
    assert feats.shape == (len(windows), 1, 64, FRAMES) == (len(windows), 1, 64, 148)
    masked = spec_augment(torch.from_numpy(feats), AugmentConfig(), torch.Generator())
    zeros = (masked == 0).float().mean().item()
    assert 0 < zeros < 0.5


def test_voice_config_keeps_its_own_defaults_under_overrides() -> None:
    cfg = load_voice_config(None, ["optim.epochs=3", "data.test_speakers=[01, 02]"])
    assert cfg.optim.epochs == 3 and cfg.optim.optimizer == "adamw" and cfg.optim.lr == 2e-3
    assert cfg.data.test_speakers == ["01", "02"] and cfg.model_name == NAME
    with pytest.raises(ConfigError, match="widht"):
        load_voice_config(None, ["net.widht=3"])


@pytest.fixture(scope="module")
def few_ravdess(ravdess: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real RAVDESS clips, a few of each actor (linked, not copied), spread over the
    emotions: 4 of each train actor 01-06, 2 of each val actor 15-16, 4 of each test actor
    17-20: a tiny run whose val and test speakers are whole (``--limit`` cuts train only)."""
    root = tmp_path_factory.mktemp("few-ravdess")
    counts = {**{f"{a:02d}": 4 for a in range(1, 7)}, "15": 2, "16": 2}
    counts |= {f"{a}": 4 for a in range(17, 21)}
    for actor, n in counts.items():
        files = sorted((ravdess / f"Actor_{actor}").glob("*.flac"))
        step = len(files) // n
        (root / f"Actor_{actor}").mkdir()
        for i in range(n):
            f = files[i * step + int(actor) % step]
            (root / f"Actor_{actor}" / f.name).symlink_to(f)
    return root


def test_a_tiny_real_voice_run_exports_registers_and_passes_the_serving_check(
    few_ravdess: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = ModelRepository(tmp_path / "models")
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(repo.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    args = ["train", "voice", "--data", str(few_ravdess), "--run", str(run), "--epochs", "1"]
    args += ["--limit", "12", "--set", "optim.batch_size=8", "--promote"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test speakers ravdess:17, ravdess:18, ravdess:19, ravdess:20" in result.output
    assert "training on 12 of 24 clips of the train speakers" in caplog.text
    assert "val and test speakers unlimited (4 and 16 clips)" in caplog.text
    info = json.loads((run / "run.json").read_text())
    exported = json.loads((run / "exported.json").read_text())
    version = exported["version"]
    assert version == "1" and exported["onnx_max_abs_diff"] <= 1e-4
    folder = repo.version_dir(NAME, version)
    card = ModelCard.model_validate_json((folder / "model.json").read_text())
    assert card.task == "voice-emotion" and card.modality == "voice"
    assert card.classes == list(CLASSES) == sorted(CLASSES)
    assert isinstance(card.input, AudioInput) and card.input.name == "logmel"
    assert (card.input.window_seconds, card.input.hop_seconds) == (1.5, 0.5)
    assert card.output.name == "probabilities" and card.output.kind == "probabilities"
    assert "CC BY-NC-SA 4.0" in card.licence and "RAVDESS" in card.licence
    assert card.reference_distribution is not None
    assert sum(card.reference_distribution.values()) == pytest.approx(1.0, abs=1e-3)
    assert {e.split.split(", ")[-2:][0] for e in card.evaluation} == {"clean", "telephone"}
    assert all(e.samples > 0 for e in card.evaluation)
    assert {e.samples for e in card.evaluation if e.split.endswith("per clip")} == {16}
    report = json.loads((folder / "report.json").read_text())
    assert report["test_speakers"] == [f"ravdess:{i}" for i in (17, 18, 19, 20)]
    assert not set(report["test_speakers"]) & set(report["train_speakers"])
    assert "accuracy" in report["baseline"]["clean"]  # eGeMAPS beside it
    for name in ("check.npz", "confusion.png", "per-class.png", "config.yaml", "split.json"):
        assert (folder / name).stat().st_size > 0, name
    # the serving check (promotion runs it): shapes, fixed windows, check.npz
    clf = load_checked(repo, NAME, version, modality="voice")
    with np.load(folder / "check.npz") as z:
        assert z["inputs"].shape[1:] == (1, 64, 148)
        np.testing.assert_allclose(clf.predict_tensor(z["inputs"]), z["outputs"], atol=1e-5)
    with pytest.raises(ModelRefused, match="cannot score face"):
        load_checked(repo, NAME, version)
    # MLflow: run metrics, the registered version and the production alias
    tracking = Tracking.for_repository(repo.root)
    mlrun = tracking.client.get_run(info["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert {"train_loss", "holdout_accuracy", "test_clean_clip_accuracy"} <= set(mlrun.data.metrics)
    assert tracking.alias(NAME, "production") == version == repo.resolve(NAME)
    mv = tracking.client.get_model_version_by_alias(NAME, "production")
    assert mv.tags[VERSION_TAG] == version and mv.run_id == info["run_id"]
    # new weights for the same number: the repository and MLflow follow
    again = runner.invoke(
        app, ["train", "voice-export", "--run", str(run), "--version", "1", "--replace"]
    )
    assert again.exit_code == 0, again.output
    assert repo.versions(NAME) == ["1"]
    assert tracking.alias(NAME, "production") == "1" == repo.resolve(NAME)
    assert tracking.client.get_model_version_by_alias(NAME, "production").version != mv.version


def test_a_bad_data_folder_or_setting_exits_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "music.wav").write_bytes(b"")
    result = runner.invoke(
        app, ["train", "voice", "--data", str(tmp_path), "--run", str(tmp_path / "r")]
    )
    assert result.exit_code == EXIT_USAGE
    assert "none of its 1 audio files is named the way RAVDESS" in result.output
    result = runner.invoke(app, ["train", "voice", "--data", str(tmp_path), "--set", "net.widht=3"])
    assert result.exit_code == EXIT_USAGE and "widht" in result.output


def test_the_shipped_voice_model_installs_passes_the_check_and_hears_unseen_actors(
    ravdess: Path, tmp_path: Path
) -> None:
    """voice-emotion/1 ships in the package: set-up installs it as production, the serving
    check passes, and numpy log-mel -> ONNX scores held-out actors far above chance."""
    from emostream.models.repository import BUNDLED_ROOT
    from emostream.models.runner import Classifier
    from emostream.training.voice_windows import all_windows as windows_of
    from emostream.training.voice_windows import clip_mean, prepare

    shipped = ModelRepository(BUNDLED_ROOT)
    if "1" not in shipped.versions(NAME):
        pytest.skip("voice-emotion/1 is not in this checkout")
    repo = ModelRepository(tmp_path / "models")
    assert repo.install_bundled(NAME) == ["1"]
    assert repo.ensure_production(NAME) == "1"
    clf: Classifier = load_checked(repo, NAME, "1", modality="voice")
    card = clf.card
    assert card.source.kind == "training" and "CC BY-NC-SA 4.0" in card.licence
    assert (repo.version_dir(NAME, "1") / "model.onnx").stat().st_size < 10 * 2**20
    test = [c for c in scan(ravdess) if c.speaker in {"ravdess:17", "ravdess:20"}][::3]
    data = prepare(test, 35.0, progress=False)
    w = windows_of(data)
    probs = clip_mean(clf.predict_tensor(w.inputs), w.clip, len(data))
    accuracy = float((probs.argmax(1) == data.labels).mean())
    assert accuracy > 0.4, accuracy  # 8 classes: chance is 0.125


def test_models_pull_installs_the_shipped_voice_model_and_promote_checks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emostream.models.repository import BUNDLED_ROOT

    if "1" not in ModelRepository(BUNDLED_ROOT).versions(NAME):
        pytest.skip("voice-emotion/1 is not in this checkout")
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_path / "models"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = runner.invoke(app, ["models", "pull", NAME])
    assert r.exit_code == 0, r.output
    assert "voice-emotion: 1 (production -> 1)" in r.output
    repo = ModelRepository(tmp_path / "models")
    assert repo.resolve(NAME) == "1"
    r = runner.invoke(app, ["models", "promote", NAME, "1"])  # runs the voice serving check
    assert r.exit_code == 0, r.output
    onnx = repo.version_dir(NAME, "1") / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    r = runner.invoke(app, ["models", "promote", NAME, "1"])
    assert r.exit_code != 0 and "sha256" in r.output
