"""Stopping and resuming a fit: ``last.pt`` gives the checkpoints of a run never stopped;
SIGTERM and ``kill -9`` leave MLflow runs KILLED, not RUNNING; ``--limit`` limits train only.

All on synthetic data made here (no shared data needed): what is tested is the bookkeeping,
not what the network learns."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("mlflow")

import torch

from emostream.cli import app
from emostream.models.repository import ModelRepository
from emostream.training import face_data, face_run
from emostream.training.face_config import load_config
from emostream.training.face_data import Split
from emostream.training.face_trainer import Trainer
from emostream.training.mlflow_store import HOST_TAG, PID_TAG, Tracking
from emostream.training.resume import LAST, ResumeError
from emostream.training.stop import EXIT_SIGTERM
from emostream.training.voice_config import load_voice_config
from emostream.training.voice_data import CLASSES as VOICE_CLASSES
from emostream.training.voice_data import Clip, speech_span
from emostream.training.voice_trainer import VoiceTrainer
from emostream.training.voice_windows import Prepared

runner = CliRunner()
TINY = ["optim.epochs=4", "optim.batch_size=16", "threads=1", "net.width=4", "data.holdout=0.25"]


class Halt(Exception):
    """What the tests raise from ``on_epoch`` to stop a fit after an epoch."""


def faces(n: int, seed: int) -> Split:
    """Noise faces, each class a little brighter than the one before (something to learn)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    images = rng.integers(0, 160, (n, 48, 48)) + labels[:, None, None] * 12
    return Split(images.astype(np.uint8), labels.astype(np.int64))


def snapshots(run_dir: Path, into: dict[int, dict[str, Any]], stop_after: int = 0) -> Any:
    """An ``on_epoch`` hook keeping each epoch's ``last.pt`` (written before the hook runs),
    and raising Halt after ``stop_after`` (0: never)."""

    def hook(epoch: int, figures: dict[str, float]) -> None:
        into[epoch] = torch.load(run_dir / LAST, weights_only=True)
        if epoch == stop_after:
            raise Halt(f"stopped after epoch {epoch}")

    return hook


def same_tensors(a: Any, b: Any) -> None:
    """Equal, tensor for tensor and number for number (the optimiser's state included)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same_tensors(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same_tensors(x, y)
    else:
        assert a == b


def without_seconds(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_a_face_fit_stopped_after_epoch_2_and_resumed_gives_the_same_checkpoints(
    tmp_path: Path,
) -> None:
    train = faces(64, 0)
    cfg = load_config(None, TINY)
    whole: dict[int, dict[str, Any]] = {}
    first = Trainer(cfg, tmp_path / "a", False).fit(train, snapshots(tmp_path / "a", whole))
    parts: dict[int, dict[str, Any]] = {}
    stopped = tmp_path / "b"
    with pytest.raises(Halt):
        Trainer(cfg, stopped, False).fit(train, snapshots(stopped, parts, stop_after=2))
    assert torch.load(stopped / LAST, weights_only=True)["epoch"] == 2
    torch.manual_seed(123)  # the process went on drawing: the resumed fit must not care
    np.random.default_rng(5).random(10)
    second = Trainer(cfg, stopped, False).fit(train, snapshots(stopped, parts))
    assert sorted(parts) == sorted(whole) == [1, 2, 3, 4]
    for epoch in (3, 4):  # network, optimiser, schedule, random states, history: all equal
        drop = ("seconds",)
        a = {k: v for k, v in whole[epoch].items() if k not in drop}
        b = {k: v for k, v in parts[epoch].items() if k not in drop}
        a["history"], b["history"] = without_seconds(a["history"]), without_seconds(b["history"])
        a["best"].pop("seconds"), b["best"].pop("seconds")
        same_tensors(a, b)
    assert without_seconds(second.history) == without_seconds(first.history)
    assert second.best_epoch == first.best_epoch
    best_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    best_b = torch.load(stopped / "checkpoint.pt", weights_only=True)
    same_tensors(best_a, best_b)


def test_another_configuration_or_other_data_is_refused_by_name(tmp_path: Path) -> None:
    train = faces(64, 0)
    cfg = load_config(None, TINY)
    with pytest.raises(Halt):
        Trainer(cfg, tmp_path, False).fit(train, snapshots(tmp_path, {}, stop_after=1))
    other = load_config(None, [*TINY, "optim.lr=0.01"])
    with pytest.raises(ResumeError, match=r"optim\.lr: 0\.05 there, 0\.01 now.*--fresh"):
        Trainer(other, tmp_path, False).fit(train)
    with pytest.raises(ResumeError, match="batches an epoch"):
        Trainer(cfg, tmp_path, False).fit(faces(200, 0))


def voices(n: int, seed: int) -> Prepared:
    """Two-second tones in noise, a pitch per class, with their speech spans."""
    rng = np.random.default_rng(seed)
    t = np.arange(32000) / 16000
    labels = np.arange(n) % len(VOICE_CLASSES)
    waves = [
        (0.3 * np.sin(2 * np.pi * (150 + 40 * c) * t) + 0.05 * rng.normal(size=t.size)).astype(
            np.float32
        )
        for c in labels
    ]
    clips = [
        Clip(Path(f"{i}.wav"), f"synthetic:{i % 3}", VOICE_CLASSES[c], "synthetic")
        for i, c in enumerate(labels)
    ]
    one_class = np.eye(len(VOICE_CLASSES), dtype=bool)[labels]
    spans = [speech_span(w) for w in waves]
    return Prepared(clips, waves, spans, labels.astype(np.int64), one_class)


def test_a_voice_fit_stopped_and_resumed_gives_the_same_checkpoints(tmp_path: Path) -> None:
    """The voice batches draw a NumPy seed from the torch generator every epoch: restoring
    the generator makes the resumed epochs the same."""
    train, val = voices(16, 0), voices(8, 1)
    sets = ["optim.epochs=3", "optim.batch_size=8", "threads=1", "net.width=4"]
    cfg = load_voice_config(None, [*sets, "data.crops_per_clip=1", "optim.patience=10"])
    whole: dict[int, dict[str, Any]] = {}
    first = VoiceTrainer(cfg, tmp_path / "a", False).fit(
        train, val, snapshots(tmp_path / "a", whole)
    )
    parts: dict[int, dict[str, Any]] = {}
    stopped = tmp_path / "b"
    with pytest.raises(Halt):
        VoiceTrainer(cfg, stopped, False).fit(train, val, snapshots(stopped, parts, stop_after=1))
    second = VoiceTrainer(cfg, stopped, False).fit(train, val, snapshots(stopped, parts))
    assert without_seconds(second.history) == without_seconds(first.history)
    for epoch in (2, 3):
        same_tensors(whole[epoch]["state_dict"], parts[epoch]["state_dict"])
        same_tensors(whole[epoch]["optimizer"], parts[epoch]["optimizer"])
        same_tensors(whole[epoch]["rng"], parts[epoch]["rng"])


# --- the CLI and MLflow -------------------------------------------------------------------


@pytest.fixture()
def synthetic_npz(tmp_path: Path) -> Path:
    """60 train faces and 25 val faces, as ``emostream train prepare`` writes them."""
    path = tmp_path / "faces.npz"
    face_data.save_npz({"train": faces(60, 0), "val": faces(25, 1)}, path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model root (and MLflow store) for the module's tests, its SQLite store made
    here: making one costs seconds, in each process that finds none. Each test uses its own
    experiment."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        Tracking.for_repository(root).experiment_id("made-first")
    return root


@pytest.fixture()
def model_root(store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(store))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield store


def fit_args(data: Path, run: Path, experiment: str) -> list[str]:
    sets = [*TINY, "optim.batch_size=20", "data.holdout=0.2", f"experiment={experiment}"]
    return ["train", "fit", "--data", str(data), "--run", str(run)] + [f"--set={s}" for s in sets]


#: run the CLI in a child process that pauses in the middle of epoch 3 (its 2nd batch of 3),
#: telling the test it is there by creating a file
PAUSED_CHILD = """
import pathlib, sys, time
from emostream.training import face_trainer
real, calls = face_trainer.augment, 0
def augment(*args):
    global calls
    calls += 1
    if calls == 8:
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(900)
    return real(*args)
face_trainer.augment = augment
from emostream.cli import app
app(sys.argv[2:])
"""


def paused_fit(tmp_path: Path, args: list[str]) -> subprocess.Popen[str]:
    ready = tmp_path / "paused"
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CHILD, str(ready), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600  # a guard against a hang, not a timing
    while not ready.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"the fit never reached epoch 3: {out}\n{err}")
        time.sleep(0.05)
    return child


def only_run(root: Path, experiment: str) -> Any:
    tracking = Tracking.for_repository(root)
    exp = tracking.client.get_experiment_by_name(experiment)
    (run,) = tracking.client.search_runs([exp.experiment_id])
    return run


def test_sigterm_ends_the_run_killed_and_the_same_command_resumes_it_to_finished(
    synthetic_npz: Path,
    model_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = tmp_path / "run"
    args = fit_args(synthetic_npz, run, "sigterm")
    child = paused_fit(tmp_path, args)
    assert only_run(model_root, "sigterm").info.status == "RUNNING"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=600)
    assert child.returncode == EXIT_SIGTERM, err
    assert "stopped by SIGTERM after epoch 2" in err
    assert "run the same command again to resume from epoch 3" in err
    killed = only_run(model_root, "sigterm")
    assert killed.info.status == "KILLED"
    assert killed.data.tags[PID_TAG] == str(child.pid)
    assert torch.load(run / LAST, weights_only=True)["epoch"] == 2
    assert not (run / "run.json").exists()
    refused = runner.invoke(app, ["train", "evaluate", "--run", str(run)])
    assert refused.exit_code == 2 and "stopped before it finished" in refused.output

    caplog.set_level(logging.INFO)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {run} from epoch 3" in caplog.text
    done = only_run(model_root, "sigterm")  # the same MLflow run, reopened: not a second one
    assert (
        done.info.run_id
        == killed.info.run_id
        == json.loads((run / "run.json").read_text())["run_id"]
    )
    assert done.info.status == "FINISHED"
    history = Tracking.for_repository(model_root).client.get_metric_history(
        done.info.run_id, "train_loss"
    )
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert not (run / LAST).exists()  # a finished fit keeps checkpoint.pt, not last.pt
    rows = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_runs_left_running_by_a_dead_process_on_this_host_are_reaped_killed(
    synthetic_npz: Path, model_root: Path, tmp_path: Path
) -> None:
    child = paused_fit(tmp_path, fit_args(synthetic_npz, tmp_path / "run", "kill-9"))
    child.kill()  # kill -9: nothing runs in the child to end its run
    child.communicate(timeout=600)
    tracking = Tracking.for_repository(model_root)
    client = tracking.client
    orphan = only_run(model_root, "kill-9")
    assert orphan.info.status == "RUNNING"
    exp = orphan.info.experiment_id
    host = socket.gethostname()
    live = client.create_run(exp, tags={PID_TAG: str(os.getpid()), HOST_TAG: host})
    elsewhere = client.create_run(exp, tags={PID_TAG: str(child.pid), HOST_TAG: f"not-{host}"})
    untagged = client.create_run(exp)
    assert tracking.reap_stale("kill-9") == [orphan.info.run_id]
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    for kept in (live, elsewhere, untagged):
        assert client.get_run(kept.info.run_id).info.status == "RUNNING"
    assert tracking.reap_stale("no-such-experiment") == []


def test_fresh_starts_over_and_another_configuration_exits_2(
    synthetic_npz: Path, model_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    sets = [*TINY, "experiment=fresh"]
    tracking = Tracking.for_repository(model_root)
    with pytest.raises(Halt):
        face_run.fit(
            synthetic_npz,
            run,
            load_config(None, sets),
            tracking,
            False,
            on_epoch=snapshots(run, {}, 1),
        )
    first = only_run(model_root, "fresh")
    assert first.info.status == "FAILED"  # not a stop: an error in the caller's hook
    args = ["train", "fit", "--data", str(synthetic_npz), "--run", str(run)]
    args += [f"--set={s}" for s in [*sets, "optim.lr=0.01"]]
    other = runner.invoke(app, args)
    assert other.exit_code == 2, other.output
    assert "another configuration (optim.lr: 0.05 there, 0.01 now)" in other.output
    fresh = runner.invoke(app, [*args, "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    info = json.loads((run / "run.json").read_text())
    assert info["run_id"] != first.info.run_id and info["epochs_run"] == 4


def test_limit_limits_the_training_faces_only_and_the_data_is_read_once(
    synthetic_npz: Path,
    model_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads: list[Path] = []
    real = face_data.read

    def counted(path: Path, progress: bool = True) -> dict[str, Split]:
        reads.append(path)
        return real(path, progress)

    monkeypatch.setattr(face_data, "read", counted)
    monkeypatch.setattr(face_run, "read", counted)
    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    args = ["train", "face", "--data", str(synthetic_npz), "--run", str(run), "--limit", "30"]
    sets = [f"--set={s}" for s in [*TINY, "experiment=limit"]]
    result = runner.invoke(app, [*args, *sets, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert reads == [synthetic_npz]  # fit, evaluate and export share one read
    assert "training on 30 of 60 train faces" in caplog.text and "val unlimited" in caplog.text
    report = json.loads((run / "report.json").read_text())
    assert report["samples"] == 25  # all of val
    info = json.loads((run / "run.json").read_text())
    params = Tracking.for_repository(model_root).client.get_run(info["run_id"]).data.params
    assert (params["data.train_faces"], params["data.train_faces_available"]) == ("30", "60")
    assert ModelRepository(model_root).versions("face-emotion") == ["1"]
