"""``emostream tune face``: an Optuna search over the training recipe, one MLflow run a trial.

The objective is the best held-out accuracy of a trial (part of train, as early stopping
uses), never val: val stays the untouched final figure. TPE is seeded, a median pruner stops
trials that trail the others after their first epochs, and the study is a SQLite file in
the output folder, so an interrupted search resumes where it stopped. The best trial's
settings are written as a config file that ``emostream train face --config`` takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emostream.training.face_config import TrainConfig
from emostream.training.face_data import read
from emostream.training.face_run import fit
from emostream.training.mlflow_store import Tracking
from emostream.training.resume import forget
from emostream.training.stop import Stopped

#: what a trial may change: (kind, low, high) for numbers, or a list of choices
SPACE: dict[str, Any] = {
    "optim.lr": ("log", 0.005, 0.2),
    "optim.weight_decay": ("log", 1e-5, 2e-3),
    "optim.label_smoothing": ("float", 0.0, 0.2),
    "net.width": [16, 24, 32],
    "net.dropout": ("float", 0.0, 0.5),
    "augment.erase": ("float", 0.0, 0.6),
    "augment.rotate": ("float", 0.0, 20.0),
}


def _suggest(trial: Any, key: str, spec: Any) -> Any:
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    kind, low, high = spec
    return trial.suggest_float(key, low, high, log=kind == "log")


def _with(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    tree = cfg.model_dump(mode="json")
    for dotted, value in values.items():
        section, key = dotted.split(".")
        tree[section][key] = value
    return TrainConfig.model_validate(tree)


def tune(
    data: Path, out: Path, base: TrainConfig, trials: int, tracking: Tracking, progress: bool
) -> tuple[dict[str, Any], float, Path]:
    """Run ``trials`` more trials; returns the best settings, their score and best.yaml."""
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=f"{base.model_name}-tune",
        storage=f"sqlite:///{out / 'optuna.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        values = {k: _suggest(trial, k, spec) for k, spec in SPACE.items()}
        cfg = _with(base, values)
        best = 0.0

        def on_epoch(epoch: int, figures: dict[str, float]) -> None:
            nonlocal best
            score = figures.get("holdout_accuracy", figures["train_accuracy"])
            best = max(best, score)
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned at epoch {epoch}")

        run_dir = out / f"trial-{trial.number}"
        try:  # a trial is never resumed: a stopped study goes on with new trials
            name = f"tune-trial-{trial.number}"
            info = fit(
                data, run_dir, cfg, tracking, progress, name, on_epoch, splits=splits, fresh=True
            )
        finally:
            forget(run_dir)
        trial.set_user_attr("mlflow_run_id", info["run_id"])
        return best

    splits = read(data, progress)
    try:
        study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    except Stopped as exc:  # the stopped trial failed; the study keeps the finished ones
        raise Stopped(
            f"{out}: tuning stopped; run the same command again to go on with the study "
            "(optuna.db)",
            exc.code,
        ) from None
    best = study.best_trial
    config = _with(base, {k: best.params[k] for k in SPACE if k in best.params})
    path = out / "best.yaml"
    path.write_text(yaml.safe_dump({"train": config.model_dump(mode="json")}, sort_keys=False))
    return dict(best.params), float(best.value or 0.0), path
