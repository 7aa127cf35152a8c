"""``emostream train face|prepare|fit|combine|evaluate|export|face-quantize|calibrate``, ``emostream
train voice|voice-evaluate|voice-export`` and ``emostream tune face``."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from emostream.cli.common import (
    EXIT_FAILED_FILES,
    EXIT_MODEL_MISSING,
    EXIT_USAGE,
    fail,
    load_settings,
)
from emostream.extras import require

if TYPE_CHECKING:
    from emostream.training.face_config import TrainConfig
    from emostream.training.face_data import Split
    from emostream.training.mlflow_store import Tracking

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Train models (the `train` extra: PyTorch, MLflow).")

DEFAULT_RUNS = Path("runs")
CONFIG_OPT = typer.Option(None, "--config", help="YAML file of training settings")
SET_OPT = typer.Option(
    None, "--set", help="override one setting: section.key=value (repeatable), e.g. optim.lr=0.02"
)


def _config(config: Path | None, overrides: list[str] | None, **flags: object) -> TrainConfig:
    from emostream.training.face_config import load_config

    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return load_config(config, [*(overrides or []), *extra])


def _tracking() -> Tracking:
    from emostream.training.mlflow_store import Tracking

    return Tracking.for_repository(load_settings().model_root)


DATA_OPT = typer.Option(..., "--data", help="FER2013 folders, its CSV, or a prepared .npz")
RUN_OPT = typer.Option(DEFAULT_RUNS / "face", "--run", "--out", help="the run folder")
DEVICE_OPT = typer.Option(None, "--device", help="auto, cpu or cuda")
EPOCHS_OPT = typer.Option(None, "--epochs")
LIMIT_OPT = typer.Option(
    None,
    "--limit",
    help="train on N of the train faces (a seeded random draw; tiny runs); val is not limited",
)
PROMOTE_OPT = typer.Option(False, "--promote", help="point production at the new version")
FRESH_OPT = typer.Option(
    False,
    "--fresh",
    help="start over: delete the run folder's last.pt (a stopped fit) instead of resuming it",
)


def _command() -> str:
    return shlex.join(["emostream", *sys.argv[1:]])


def _trained(info: dict[str, Any]) -> None:
    typer.echo(
        f"trained {info['epochs_run']} epochs in {info['train_seconds']:.0f} s on "
        f"{info['device']} ({info['precision']}), best epoch {info['best_epoch']}; "
        f"MLflow run {info['run_id']} in {info['tracking_uri']}"
    )


def _evaluate(run: Path, data: Path, splits: dict[str, Split] | None = None) -> None:
    from emostream.training import face_run

    r = face_run.evaluate(run, data, _command(), splits=splits)
    typer.echo(
        f"val: accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}, calibration error "
        f"{r.ece:.3f} on {r.samples} faces; report, confusion.png and reliability.png in {run}"
    )


def _export(run: Path, promote: bool, splits: dict[str, Split] | None = None) -> None:
    from emostream.models.repository import ModelRepository
    from emostream.training import face_run

    repo = ModelRepository(load_settings().model_root)
    card = face_run.export(run, repo, promote=promote, splits=splits)
    shown = (
        "production"
        if promote
        else f"promote with `emostream models promote {card.name} {card.version}`"
    )
    typer.echo(f"registered {card.ref} in {repo.root} and MLflow ({shown})")


def _guarded(step: Callable[[], T]) -> T:
    """Run a stage; a problem with the data, the config or the export exits with its reason."""
    require("torch", "mlflow", extra="train")
    from emostream.training.face_data import DataError
    from emostream.training.onnx_export import ParityError
    from emostream.training.runs import Unfinished
    from emostream.training.stop import Stopped
    from emostream.training.train_config import ConfigError
    from emostream.training.voice_data import DataError as VoiceDataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return step()
    except Stopped as exc:  # SIGTERM or Ctrl-C during a fit: the message says how to resume
        raise fail(str(exc), exc.code) from None
    except (DataError, VoiceDataError, ConfigError, Unfinished) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except FileNotFoundError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except ParityError as exc:
        raise fail(str(exc), EXIT_FAILED_FILES) from None


@app.command("face")
def train_face(
    data: Path = DATA_OPT,
    run: Path = RUN_OPT,
    config: Path | None = CONFIG_OPT,
    overrides: list[str] | None = SET_OPT,
    device: str | None = DEVICE_OPT,
    epochs: int | None = EPOCHS_OPT,
    limit: int | None = LIMIT_OPT,
    promote: bool = PROMOTE_OPT,
    fresh: bool = FRESH_OPT,
) -> None:
    """Train, evaluate and export the face model: a new repository version and MLflow run.
    A fit stopped in the run folder (last.pt) goes on where it stopped, unless --fresh."""

    def all_stages() -> None:
        from emostream.training import face_run
        from emostream.training.face_data import read
        from emostream.training.runs import resumable

        cfg = _config(
            config, overrides, device=device, **{"optim.epochs": epochs, "data.limit": limit}
        )
        resumable(run, cfg, fresh)  # a stopped fit of other settings: said before reading
        splits = read(data)  # once, for the three stages
        _trained(face_run.fit(data, run, cfg, _tracking(), splits=splits))
        _evaluate(run, data, splits)
        _export(run, promote, splits)

    _guarded(all_stages)


@app.command("prepare")
def train_prepare(
    data: Path = DATA_OPT,
    out: Path = typer.Option(DEFAULT_RUNS / "fer2013.npz", "--out", help="the .npz to write"),
) -> None:
    """Decode FER2013 once into a compressed array file (the first `dvc repro` stage)."""

    def stage() -> None:
        from emostream.training import face_run

        splits = face_run.prepare(data, out)
        typer.echo(f"{out}: " + ", ".join(f"{k} {len(v)} faces" for k, v in splits.items()))

    _guarded(stage)


@app.command("fit")
def train_fit(
    data: Path = DATA_OPT,
    run: Path = RUN_OPT,
    config: Path | None = CONFIG_OPT,
    overrides: list[str] | None = SET_OPT,
    device: str | None = DEVICE_OPT,
    epochs: int | None = EPOCHS_OPT,
    limit: int | None = LIMIT_OPT,
    fresh: bool = FRESH_OPT,
) -> None:
    """Train only: checkpoint, history and an MLflow run in the run folder. A fit stopped
    there (last.pt) goes on where it stopped, unless --fresh."""

    def stage() -> None:
        from emostream.training import face_run

        flags = {"optim.epochs": epochs, "data.limit": limit}
        cfg = _config(config, overrides, device=device, **flags)
        _trained(face_run.fit(data, run, cfg, _tracking(), fresh=fresh))

    _guarded(stage)


@app.command("combine")
def train_combine(
    runs: list[Path] = typer.Option(..., "--run", help="a fitted run folder (two or more)"),
    out: Path = typer.Option(..., "--out", help="the ensemble's run folder"),
) -> None:
    """Several fitted runs as one ensemble (probabilities averaged); evaluate, export next."""

    def stage() -> None:
        from emostream.training import face_run

        try:
            info = face_run.combine(runs, out, _tracking())
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        typer.echo(f"{out}: ensemble of {len(info['members'])} runs; MLflow run {info['run_id']}")

    _guarded(stage)


@app.command("evaluate")
def train_evaluate(
    run: Path = RUN_OPT,
    data: Path | None = typer.Option(None, "--data", help="default: the run's own data"),
) -> None:
    """Score the run's served graph on val: report.json, confusion and reliability PNGs."""
    from emostream.training import face_run

    _guarded(lambda: _evaluate(run, data or Path(face_run.run_info(run)["data"])))


@app.command("export")
def train_export(run: Path = RUN_OPT, promote: bool = PROMOTE_OPT) -> None:
    """ONNX with a parity check, a new repository version with its card, MLflow version."""
    _guarded(lambda: _export(run, promote))


@app.command("face-quantize")
def train_face_quantize(
    version: str | None = typer.Option(
        None,
        "--version",
        help="the face-emotion version or alias to quantize (default: production)",
    ),
    calibration: int = typer.Option(
        512, "--calibration", min=1, help="FER2013 train faces to calibrate on (class-stratified)"
    ),
    max_drop: float = typer.Option(
        1.0,
        "--max-drop",
        help="refuse if val accuracy falls more points than this below the parent",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="FER2013 folders, its CSV or a prepared .npz (default: the shared data)",
    ),
    run: Path = typer.Option(DEFAULT_RUNS / "face-quantize", "--run", help="the run folder"),
    seed: int = typer.Option(0, "--seed", help="draws the calibration faces"),
) -> None:
    """int8 (static QDQ) copy of a face-emotion version as the next version; production stays."""
    require("onnx", extra="convert")

    def stage() -> None:
        from emostream.models.repository import ModelMissingError, ModelRepository
        from emostream.paths import data_root
        from emostream.training import face_quantize

        root = data_root()
        source = data or (root / "fer2013" if root is not None else None)
        if source is None:
            raise fail("no FER2013 data: pass --data or set EMOSTREAM_DATA", EXIT_USAGE)
        repo = ModelRepository(load_settings().model_root)
        try:
            card = face_quantize.quantize(
                repo,
                source,
                run,
                _tracking(),
                version=version,
                calibration=calibration,
                max_drop=max_drop,
                seed=seed,
                command=_command(),
            )
        except face_quantize.QuantizationRefused as exc:
            raise fail(str(exc), EXIT_FAILED_FILES) from None
        except ModelMissingError as exc:
            raise fail(str(exc), EXIT_MODEL_MISSING) from None
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        figures = face_quantize.report_line(run)
        typer.echo(
            f"registered {card.ref} in {repo.root} and MLflow: {figures}; promote with "
            f"`emostream models promote {card.name} {card.version}`"
        )

    _guarded(stage)


#: where each emotion task's data sits in the shared data folder (README, "Data")
SHARED_DATA = {"face-emotion": "fer2013", "voice-emotion": "ravdess"}


@app.command("calibrate")
def train_calibrate(
    model: str = typer.Argument(..., help="face-emotion or voice-emotion (a repository model)"),
    version: str | None = typer.Option(
        None, "--version", help="the version or alias to calibrate (default: production)"
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="FER2013 (folders, CSV or .npz) or RAVDESS audio (default: the shared data)",
    ),
    fit_speakers: str | None = typer.Option(
        None,
        "--fit-speakers",
        help="voice: comma-separated speakers to fit on (default 15,16); never the test ones",
    ),
    fit_logits: Path | None = typer.Option(
        None,
        "--fit-logits",
        help="fit on this .npz instead (arrays 'labels' and 'logits' or 'probs', e.g. "
        "out-of-fold scores)",
    ),
    run: Path = typer.Option(DEFAULT_RUNS / "calibrate", "--run", help="the run folder"),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="at most N samples (voice: clips) of each set (tiny runs)"
    ),
) -> None:
    """Temperature scaling of an emotion model version, fitted on held-out data, as the next
    version (docs/TRAINING.md, "Calibration"); production stays."""
    require("onnx", extra="convert")

    def stage() -> None:
        from emostream.models.repository import ModelMissingError, ModelRepository
        from emostream.paths import data_root
        from emostream.training import calibrate

        repo = ModelRepository(load_settings().model_root)
        try:
            task = repo.card(model, repo.resolve(model, version or "production")).task
        except ModelMissingError as exc:
            raise fail(str(exc), EXIT_MODEL_MISSING) from None
        root = data_root()
        shared = SHARED_DATA.get(task)
        source = data or (root / shared if root is not None and shared else None)
        if source is None:
            raise fail(f"no data for {model}: pass --data or set EMOSTREAM_DATA", EXIT_USAGE)
        if fit_logits is not None and not fit_logits.is_file():
            raise fail(f"--fit-logits {fit_logits}: no such file", EXIT_USAGE)
        speakers = (
            [s.strip() for s in fit_speakers.split(",") if s.strip()] if fit_speakers else None
        )
        try:
            card = calibrate.calibrate(
                repo,
                source,
                run,
                _tracking(),
                name=model,
                version=version,
                fit_speakers=speakers,
                fit_logits=fit_logits,
                limit=limit,
                command=_command(),
            )
        except ModelMissingError as exc:
            raise fail(str(exc), EXIT_MODEL_MISSING) from None
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        typer.echo(
            f"registered {card.ref} in {repo.root} and MLflow: {calibrate.report_line(card)}; "
            f"promote with `emostream models promote {card.name} {card.version}`"
        )

    _guarded(stage)


VOICE_DATA_OPT = typer.Option(
    ...,
    "--data",
    help="a folder of RAVDESS, TESS, CREMA-D, EMO-DB or nEMO audio (any format and rate), "
    "named as the corpus names its files; repeat it to train on several corpora together",
)
VOICE_RUN_OPT = typer.Option(DEFAULT_RUNS / "voice", "--run", "--out", help="the run folder")
VERSION_OPT = typer.Option(
    None, "--version", help="the repository version to write (default: the next number)"
)
REPLACE_OPT = typer.Option(
    False, "--replace", help="re-write --version in place (new weights for the same number)"
)


def _voice_evaluate(run: Path, baseline: bool) -> None:
    from emostream.training import voice_run

    f = voice_run.evaluate(run, _command(), baseline=baseline)
    net = f["network"]
    line = (
        f"test speakers {', '.join(f['test_speakers'])}: per clip "
        f"{net['clean']['clip']['accuracy']:.4f} clean, "
        f"{net['telephone']['clip']['accuracy']:.4f} telephone; per 1.5 s window "
        f"{net['clean']['window']['accuracy']:.4f} clean, "
        f"{net['telephone']['window']['accuracy']:.4f} telephone"
    )
    if "baseline" in f:
        line += f"; eGeMAPS baseline per clip {f['baseline']['clean']['accuracy']:.4f} clean"
    typer.echo(f"{line}; report.json and PNGs in {run}")


def _voice_export(run: Path, promote: bool, version: str | None, replace: bool) -> None:
    from emostream.models.repository import ModelRepository
    from emostream.training import voice_run

    repo = ModelRepository(load_settings().model_root)
    card = voice_run.export(run, repo, promote=promote, version=version, replace=replace)
    shown = (
        "production"
        if promote
        else f"promote with `emostream models promote {card.name} {card.version}`"
    )
    typer.echo(f"registered {card.ref} in {repo.root} and MLflow ({shown})")


@app.command("voice")
def train_voice(
    data: list[Path] = VOICE_DATA_OPT,
    run: Path = VOICE_RUN_OPT,
    config: Path | None = CONFIG_OPT,
    overrides: list[str] | None = SET_OPT,
    device: str | None = DEVICE_OPT,
    epochs: int | None = EPOCHS_OPT,
    limit: int | None = typer.Option(
        None,
        "--limit",
        help="train on N clips of the train speakers (a seeded random draw; tiny runs); "
        "val and test speakers are not limited",
    ),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="eGeMAPS beside it"),
    promote: bool = PROMOTE_OPT,
    version: str | None = VERSION_OPT,
    replace: bool = REPLACE_OPT,
    fresh: bool = FRESH_OPT,
) -> None:
    """Train, evaluate and export the voice model on held-out speakers: a repository
    version with its card, an MLflow run and model version. A fit stopped in the run
    folder (last.pt) goes on where it stopped, unless --fresh."""

    def all_stages() -> None:
        from emostream.training import voice_run
        from emostream.training.voice_config import load_voice_config

        extra = {"device": device, "optim.epochs": epochs, "data.limit": limit}
        sets = [f"{k}={v}" for k, v in extra.items() if v is not None]
        cfg = load_voice_config(config, [*(overrides or []), *sets])
        _trained(voice_run.fit(data, run, cfg, _tracking(), fresh=fresh))
        _voice_evaluate(run, baseline)
        _voice_export(run, promote, version, replace)

    _guarded(all_stages)


@app.command("voice-evaluate")
def train_voice_evaluate(
    run: Path = VOICE_RUN_OPT,
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="eGeMAPS beside it"),
) -> None:
    """Score a voice run on its test speakers, clean and telephone; report and PNGs."""
    _guarded(lambda: _voice_evaluate(run, baseline))


@app.command("voice-export")
def train_voice_export(
    run: Path = VOICE_RUN_OPT,
    promote: bool = PROMOTE_OPT,
    version: str | None = VERSION_OPT,
    replace: bool = REPLACE_OPT,
) -> None:
    """ONNX with a parity check, a repository version with its card, MLflow version."""
    _guarded(lambda: _voice_export(run, promote, version, replace))


tune_app = typer.Typer(no_args_is_help=True, help="Search training settings with Optuna.")


@tune_app.command("face")
def tune_face(
    data: Path = DATA_OPT,
    out: Path = typer.Option(DEFAULT_RUNS / "tune-face", "--out", help="study and trial runs"),
    trials: int = typer.Option(20, "--trials", min=1, help="trials to run (added to the study)"),
    config: Path | None = CONFIG_OPT,
    overrides: list[str] | None = SET_OPT,
    device: str | None = DEVICE_OPT,
    epochs: int | None = EPOCHS_OPT,
    limit: int | None = LIMIT_OPT,
) -> None:
    """Each trial trains on train and is scored on the held-out part; one MLflow run each."""
    require("optuna", extra="train")

    def stage() -> None:
        from emostream.training.face_tune import tune

        cfg = _config(
            config, overrides, device=device, **{"optim.epochs": epochs, "data.limit": limit}
        )
        params, score, path = tune(data, out, cfg, trials, _tracking(), progress=True)
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
        )
        typer.echo(f"best held-out accuracy {score:.4f} with {shown}")
        typer.echo(f"train it: emostream train face --data {data} --config {path}")

    _guarded(stage)


@app.command("voice-cv")
def train_voice_cv(
    data: list[Path] = VOICE_DATA_OPT,
    out: Path = typer.Option(DEFAULT_RUNS / "voice-cv", "--out", help="the CV folder"),
    folds: int = typer.Option(5, "--folds", min=2, help="folds over all speakers"),
    only: list[int] | None = typer.Option(None, "--fold", help="run only these folds"),
    config: Path | None = CONFIG_OPT,
    overrides: list[str] | None = SET_OPT,
    device: str | None = DEVICE_OPT,
    epochs: int | None = EPOCHS_OPT,
) -> None:
    """Leave-speakers-out cross-validation of a voice recipe: k folds over every speaker
    of every corpus; the mean and spread per corpus go to CV/cv.json (finished folds are
    kept, a stopped one resumes)."""

    def cv() -> None:
        from emostream.training import voice_cv
        from emostream.training.voice_config import load_voice_config

        extra = {"device": device, "optim.epochs": epochs}
        sets = [f"{k}={v}" for k, v in extra.items() if v is not None]
        cfg = load_voice_config(config, [*(overrides or []), *sets])
        try:
            got = voice_cv.run_cv(data, out, cfg, folds, _tracking(), only=only)
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        typer.echo(json.dumps(got["summary"], indent=2))

    _guarded(cv)
