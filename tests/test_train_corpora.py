"""Training on several corpora and from teachers: the set-valued loss (a corpus without
``calm``), distillation, nEMO's naming, speed perturbation, corpus balance, and the
leave-speakers-out cross-validation end to end on synthetic speech."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("mlflow")

import torch.nn.functional as F  # noqa: E402

from emostream.cli import app  # noqa: E402
from emostream.models.repository import ModelRepository  # noqa: E402
from emostream.training.distil import teacher_probs  # noqa: E402
from emostream.training.face_config import load_config  # noqa: E402
from emostream.training.face_data import Split  # noqa: E402
from emostream.training.face_trainer import Trainer, holdout_split  # noqa: E402
from emostream.training.fer2013 import CLASSES as FACE_CLASSES  # noqa: E402
from emostream.training.losses import (  # noqa: E402
    Batch,
    batch_loss,
    distillation,
    set_cross_entropy,
)
from emostream.training.mlflow_store import Tracking  # noqa: E402
from emostream.training.voice_augment import speed_window  # noqa: E402
from emostream.training.voice_cv import assign_folds  # noqa: E402
from emostream.training.voice_data import (  # noqa: E402
    CLASSES,
    CORPUS_CLASSES,
    Clip,
    allowed,
    may_mean,
    parse_nemo,
    scan_all,
)
from emostream.training.voice_trainer import draw_weights  # noqa: E402
from emostream.training.voice_windows import WINDOW  # noqa: E402

runner = CliRunner()


def _clip(corpus: str, speaker: str, emotion: str) -> Clip:
    return Clip(Path(f"{speaker}.wav"), f"{corpus}:{speaker}", emotion, corpus)


# -- the loss ------------------------------------------------------------------------------


def test_one_class_per_label_is_exactly_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 8, generator=g)
    y = torch.randint(0, 8, (32,), generator=g)
    one = F.one_hot(y, 8).bool()
    w = torch.rand(8, generator=g) + 0.5
    torch.testing.assert_close(set_cross_entropy(logits, y, one, w), F.cross_entropy(logits, y, w))
    torch.testing.assert_close(
        set_cross_entropy(logits, y, one, None, 0.1),
        F.cross_entropy(logits, y, label_smoothing=0.1),
    )


def test_a_label_that_may_mean_two_classes_lets_mass_move_between_them_only() -> None:
    neutral, calm, sad = CLASSES.index("neutral"), CLASSES.index("calm"), CLASSES.index("sad")
    nemo_neutral = allowed([_clip("nemo", "EB0", "neutral")])
    assert nemo_neutral[0].tolist() == [c in ("neutral", "calm") for c in CLASSES]
    base = torch.zeros(1, 8)
    y = torch.tensor([neutral])
    mask = torch.from_numpy(nemo_neutral)
    to_neutral, to_calm = base.clone(), base.clone()
    to_neutral[0, neutral] = 3.0
    to_calm[0, calm] = 3.0
    # heard as calm or as neutral: the same loss for a label that may mean either
    torch.testing.assert_close(
        set_cross_entropy(to_neutral, y, mask), set_cross_entropy(to_calm, y, mask)
    )
    # but a sad clip of the same corpus still pushes calm (and disgust) down
    logits = torch.zeros(1, 8, requires_grad=True)
    sad_mask = torch.from_numpy(allowed([_clip("nemo", "EB0", "sad")]))
    set_cross_entropy(logits, torch.tensor([sad]), sad_mask).backward()
    assert logits.grad is not None
    assert logits.grad[0, calm] > 0 and logits.grad[0, CLASSES.index("disgust")] > 0
    assert logits.grad[0, sad] < 0


def test_distillation_is_zero_at_the_teacher_and_blends_with_the_label() -> None:
    g = torch.Generator().manual_seed(1)
    teacher = torch.softmax(torch.randn(16, 7, generator=g), 1)
    at_teacher = teacher.log()
    assert float(distillation(at_teacher, teacher, 4.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(distillation(torch.zeros(16, 7), teacher, 4.0)) > 0
    y = teacher.argmax(1)
    w = torch.ones(7)
    plain = batch_loss(at_teacher, Batch(at_teacher, y), w, 0.0)
    half = batch_loss(at_teacher, Batch(at_teacher, y, soft=teacher), w, 0.0, 0.5, 4.0)
    assert float(half) == pytest.approx(0.5 * float(plain), rel=1e-4)


# -- corpora -------------------------------------------------------------------------------


def test_nemo_names_read_to_speaker_and_emotion_and_its_classes() -> None:
    got = parse_nemo(Path("nemo/EB0/EB0_happiness_12.opus"))
    assert got is not None and (got.speaker, got.emotion, got.corpus) == (
        "nemo:EB0",
        "happy",
        "nemo",
    )
    assert parse_nemo(Path("EB0_boredom_1.opus")) is None  # not one of nEMO's emotions
    assert parse_nemo(Path("03-01-05-01-01-01-12.wav")) is None
    assert set(CORPUS_CLASSES["nemo"]) == set(CLASSES) - {"calm", "disgust"}
    assert may_mean(_clip("ravdess", "01", "neutral")) == {"neutral"}  # RAVDESS has calm
    assert may_mean(_clip("nemo", "EB0", "neutral")) == {"neutral", "calm"}


def test_speed_perturbation_keeps_the_window_and_moves_the_pitch() -> None:
    t = np.arange(3 * WINDOW) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    for speed, pitch in ((1.0, 1000), (1.1, 1100), (0.9, 900)):
        out = speed_window(lambda n: tone[:n], speed, WINDOW)
        assert out.shape == (WINDOW,) and out.dtype == np.float32
        spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
        peak = np.argmax(spectrum) * 16000 / (len(out) - 2000)
        assert peak == pytest.approx(pitch, abs=5)
    np.testing.assert_array_equal(speed_window(lambda n: tone[:n], 1.0, WINDOW), tone[:WINDOW])


def test_corpus_balance_shares_an_epoch_between_corpora() -> None:
    clips = [_clip("ravdess", "01", "sad")] * 10 + [_clip("nemo", "EB0", "sad")] * 40
    train = prepare_stub(clips)
    assert draw_weights(train, 0.0) is None
    even = draw_weights(train, 1.0)
    assert even is not None and even[:10].sum() == pytest.approx(0.5)
    half = draw_weights(train, 0.5)
    assert half is not None and half[:10].sum() == pytest.approx(1 / 3)  # sqrt(10):sqrt(40)


def prepare_stub(clips: list[Clip]):  # type: ignore[no-untyped-def]
    from emostream.training.voice_windows import Prepared

    n = len(clips)
    labels = np.array([CLASSES.index(c.emotion) for c in clips])
    return Prepared(
        clips, [np.zeros(WINDOW, np.float32)] * n, [(0, WINDOW)] * n, labels, allowed(clips)
    )


def test_folds_hold_out_every_speaker_once_and_every_corpus_in_each() -> None:
    clips = [_clip("ravdess", f"{i:02d}", "sad") for i in range(1, 21)]
    clips += [_clip("nemo", s, "sad") for s in ("EB0", "IC0", "KD0", "KS0", "MK0", "MP0")]
    folds = assign_folds(clips, 5, seed=0)
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted({c.speaker for c in clips})  # each exactly once
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for f in folds:
        assert {s.split(":")[0] for s in f} == {"ravdess", "nemo"}
    assert folds == assign_folds(clips, 5, seed=0)
    assert folds != assign_folds(clips, 5, seed=1)
    with pytest.raises(ValueError, match="folds need"):
        assign_folds(clips, 27, seed=0)


# -- cross-validation end to end -----------------------------------------------------------


def _wav(path: Path, seconds: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed % 300) * t) + 0.05 * rng.normal(size=len(t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Synthetic clips under RAVDESS's and nEMO's file names: 3 actors and 3 speakers."""
    root = tmp_path_factory.mktemp("two-corpora")
    ravdess, nemo = root / "ravdess", root / "nemo"
    k = 0
    for actor in ("01", "02", "03"):
        for emo in ("01", "02", "04", "05"):  # neutral, calm, sad, angry
            _wav(ravdess / f"Actor_{actor}" / f"03-01-{emo}-01-01-01-{actor}.wav", 2.0, k)
            k += 1
    for speaker in ("EB0", "IC0", "KD0"):
        for emo in ("neutral", "sadness", "anger"):
            _wav(nemo / speaker / f"{speaker}_{emo}_1.wav", 2.0, k)
            k += 1
    return ravdess, nemo


def _cv(
    corpora: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[str]]:
    """A private model root and MLflow store; the CV folder and the command's first args."""
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_path / "models"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "cv"
    data = [a for c in corpora for a in ("--data", str(c))]
    return out, ["train", "voice-cv", *data, "--out", str(out)]


def test_voice_cv_runs_every_fold_reports_each_corpus_and_keeps_finished_folds(
    two_corpora: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ravdess, nemo = two_corpora
    out, args = _cv(two_corpora, tmp_path, monkeypatch)
    args += ["--folds", "3", "--epochs", "1", "--set", "data.epoch_windows=16"]
    args += ["--set", "optim.batch_size=8", "--set", "data.corpus_balance=0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cv = json.loads((out / "cv.json").read_text())
    assert cv["done"] == [0, 1, 2]
    for corpus in ("ravdess", "nemo"):
        row = cv["summary"][corpus]
        assert len(row["clean_clip"]["folds"]) == 3
        assert 0.0 <= row["clean_clip"]["mean"] <= 1.0
        assert "telephone_window" in row
    assert "clean_clip_own_classes" in cv["summary"]["nemo"]  # nEMO lacks calm, disgust
    assert cv["summary"]["ravdess"]["clips"] == 12 and cv["summary"]["nemo"]["clips"] == 9
    folds = json.loads((out / "folds.json").read_text())
    assert sorted(s for f in folds for s in f) == sorted(
        {c.speaker for c in scan_all([ravdess, nemo])}
    )
    with np.load(out / "oof.npz") as oof:
        assert oof["logits"].shape[1] == len(CLASSES)
        assert len(oof["labels"]) == len(oof["logits"]) == len(oof["corpus"]) == len(oof["speaker"])
    runs = Tracking.for_repository(tmp_path / "models").client.search_runs(
        [
            Tracking.for_repository(tmp_path / "models")
            .client.get_experiment_by_name("voice-emotion-cv")
            .experiment_id
        ]
    )
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    # run again: finished folds are kept, not trained again
    stamp = (out / "fold-1" / "result.json").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "fold-1" / "result.json").stat().st_mtime_ns == stamp
    bad = runner.invoke(app, [*args[:8], "--folds", "40"])
    assert bad.exit_code == 2 and "folds need" in bad.output


def test_training_on_one_corpus_still_scores_every_held_out_speaker(
    two_corpora: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, args = _cv(two_corpora, tmp_path, monkeypatch)
    args += ["--folds", "2", "--fold", "0", "--epochs", "1", "--set", "data.epoch_windows=8"]
    args += ["--set", "optim.batch_size=8", "--set", "data.train_corpora=[ravdess]"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    got = json.loads((out / "fold-0" / "result.json").read_text())
    assert got["train_clips"] < 12  # RAVDESS clips of the other fold only
    assert set(got["figures"]) == {"ravdess", "nemo"}
    assert not (out / "fold-1").exists()


# -- face distillation ---------------------------------------------------------------------


def test_face_teachers_are_run_as_served_and_a_student_learns_from_them(
    repo: ModelRepository, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 48, 48), dtype=np.uint8)
    probs = teacher_probs(repo, ["face-emotion/3"], images, FACE_CLASSES, progress=False)
    assert probs.shape == (40, 7) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    two = teacher_probs(repo, ["face-emotion/2", "face-emotion/3"], images, FACE_CLASSES, False)
    one = teacher_probs(repo, ["face-emotion/2"], images, FACE_CLASSES, False)
    np.testing.assert_allclose(two, (one + probs) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="teacher voice-emotion"):
        teacher_probs(repo, ["voice-emotion/1"], images, FACE_CLASSES, False)

    seen: list[int] = []

    def teacher(faces: np.ndarray) -> np.ndarray:
        seen.append(len(faces))
        return teacher_probs(repo, ["face-emotion/3"], faces, FACE_CLASSES, False)

    cfg = load_config(
        None,
        ["optim.epochs=1", "optim.batch_size=16", "optim.distill_weight=0.7", "data.holdout=0.2"],
    )
    split = Split(images, rng.integers(0, 7, 40))
    result = Trainer(cfg, tmp_path, progress=False).fit(split, teacher=teacher)
    trained, held = holdout_split(split, 0.2, cfg.seed)
    assert held is not None and seen == [len(trained)] and len(trained) < 40  # not held out
    assert np.isfinite(result.history[0]["train_loss"])
