"""``emostream train face|prepare|fit|evaluate|export`` and ``emostream tune face``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from emostream.cli.common import EXIT_USAGE, fail, load_settings
from emostream.extras import require

app = typer.Typer(no_args_is_help=True, help="Train models (the `train` extra: PyTorch, MLflow).")

DEFAULT_RUNS = Path("runs")
CONFIG_OPT = typer.Option(None, "--config", help="YAML file of training settings")
SET_OPT = typer.Option(
    None, "--set", help="override one setting: section.key=value (repeatable), e.g. optim.lr=0.02"
)


def _config(config: Path | None, overrides: list[str] | None, **flags: object) -> object:
    from emostream.training.face_config import ConfigError, load_config

    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        return load_config(config, [*(overrides or []), *extra])
    except ConfigError as exc:
        raise fail(f"bad training config: {exc}", EXIT_USAGE) from None


def _tracking() -> object:
    from emostream.training.tracking import Tracking

    return Tracking.for_repository(load_settings().model_root)


@app.command("fit")
def train_fit(
    data: Path = typer.Option(..., "--data", help="FER2013 folders, its CSV, or a prepared .npz"),
    out: Path = typer.Option(DEFAULT_RUNS / "face", "--out", help="the run folder"),
    config: Path | None = CONFIG_OPT,
    overrides: list[str] | None = SET_OPT,
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda"),
    epochs: int | None = typer.Option(None, "--epochs"),
    limit: int | None = typer.Option(None, "--limit", help="at most N faces per split"),
) -> None:
    """Train the face network (checkpoint, history and an MLflow run in the run folder)."""
    require("torch", "mlflow", extra="train")
    from emostream.training import face_run
    from emostream.training.face_config import TrainConfig
    from emostream.training.face_data import DataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = _config(
        config, overrides, device=device, **{"optim.epochs": epochs, "data.limit": limit}
    )
    assert isinstance(cfg, TrainConfig)
    try:
        info = face_run.fit(data, out, cfg, _tracking())  # type: ignore[arg-type]
    except DataError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    typer.echo(
        f"trained {info['epochs_run']} epochs in {info['train_seconds']:.0f} s on "
        f"{info['device']} ({info['precision']}), best epoch {info['best_epoch']}; "
        f"MLflow run {info['run_id']}"
    )
