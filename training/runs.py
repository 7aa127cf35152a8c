"""A training run folder's bookkeeping, whatever the modality.

``run.json`` carries the MLflow run id from stage to stage, so any stage can be re-run alone;
:func:`publish` is the one place a trained, exported model becomes a repository version, an
MLflow model version (with its files logged to the run) and, if asked, production. A fit
stopped before it finished leaves ``last.pt`` (:mod:`resume`) instead of ``run.json``:
:func:`resumable` and :func:`fitting` go on with it, in the same MLflow run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emostream.models.card import Evaluation, ModelCard
from emostream.models.repository import PRODUCTION, SHADOW, ModelRepository
from emostream.training.mlflow_store import VERSION_TAG, RunLog, Tracking
from emostream.training.onnx_export import Exported
from emostream.training.resume import LAST, Saved, forget, peek
from emostream.training.stop import EXIT_SIGINT, Stopped, sigterm_stops
from emostream.training.train_config import RunConfig

if TYPE_CHECKING:  # the loop needs torch; these helpers do not
    from emostream.training.loop import EpochHook, TrainResult

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
#: written by export (its own file: each DVC stage owns the files it writes)
EXPORT_FILE = "exported.json"


class Unfinished(ValueError):
    """The run folder's fit was stopped before it finished: there is nothing to evaluate or
    export yet."""


def run_info(run_dir: Path) -> dict[str, Any]:
    f = run_dir / RUN_FILE
    if (run_dir / LAST).is_file():
        raise Unfinished(
            f"{run_dir}: its fit was stopped before it finished (last.pt is there); resume it "
            "with the same fit command first, or start over with --fresh"
        )
    if not f.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run folder (no {RUN_FILE})")
    info: dict[str, Any] = json.loads(f.read_text())
    return info


def write_info(run_dir: Path, **info: Any) -> dict[str, Any]:
    (run_dir / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def epoch_logger(mlrun: RunLog, on_epoch: EpochHook | None) -> EpochHook:
    """Each epoch's figures to the MLflow run, then to the caller's hook (if any)."""

    def done(epoch: int, figures: dict[str, float]) -> None:
        mlrun.metrics(figures, step=epoch)
        if on_epoch is not None:
            on_epoch(epoch, figures)

    return done


def record_fit(
    run_dir: Path,
    mlrun: RunLog,
    tracking: Tracking,
    result: TrainResult,
    data: Path | list[Path],
    seed: int,
    **extra: Any,
) -> dict[str, Any]:
    """After a fit, for any modality: history.json and the best figures logged to the run,
    and ``run.json`` written (with ``extra``, e.g. the speakers); ``last.pt`` is deleted:
    the fit is done, and the same command on the folder trains anew, as it always did."""
    history = run_dir / "history.json"
    history.write_text(json.dumps(result.history, indent=2) + "\n")
    mlrun.artifact(history)
    mlrun.metrics(
        {"best_epoch": result.best_epoch, "train_seconds": result.seconds}
        | {f"best_{k}": v for k, v in result.best.items() if k != "score"}
    )
    mlrun.params({"resolved.device": result.device, "resolved.precision": result.precision})
    info = write_info(
        run_dir,
        run_id=mlrun.run_id,
        tracking_uri=tracking.uri,
        data=[str(d) for d in data] if isinstance(data, list) else str(data),
        seed=seed,
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        train_seconds=round(result.seconds, 1),
        device=result.device,
        precision=result.precision,
        **extra,
    )
    forget(run_dir)
    return info


def resumable(run_dir: Path, cfg: RunConfig, fresh: bool = False) -> Saved | None:
    """The stopped fit in ``run_dir`` to go on with (its ``last.pt``), or None for a new fit;
    ``fresh`` deletes ``last.pt`` first. A ``last.pt`` of another configuration is a
    ResumeError: call this before reading the data, so that error comes at once."""
    if fresh and forget(run_dir):
        log.info("%s: --fresh: last.pt deleted, training from the first epoch", run_dir)
    return peek(run_dir, cfg)


@contextmanager
def fitting(
    run_dir: Path, cfg: RunConfig, tracking: Tracking, name: str, prior: Saved | None
) -> Iterator[RunLog]:
    """The MLflow run of a fit: a new one, or the stopped fit's (``prior``) reopened, so a
    resumed fit is one run. SIGTERM or Ctrl-C inside ends it KILLED and raises
    :class:`Stopped` saying how to go on."""
    run_id = None if prior is None else prior.meta.get("run_id")
    if prior is not None:
        log.info(
            "resuming %s from epoch %d (epochs 1-%d done, kept in last.pt; --fresh starts "
            "over); MLflow run %s",
            run_dir,
            prior.epoch + 1,
            prior.epoch,
            run_id,
        )
    with sigterm_stops(), tracking.run(cfg.experiment, name, run_id) as mlrun:
        try:
            yield mlrun
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM's Stopped
            code = exc.code if isinstance(exc, Stopped) else EXIT_SIGINT
            why = str(exc) if isinstance(exc, Stopped) else "stopped by Ctrl-C"
            raise Stopped(_how_to_resume(run_dir, cfg, why, mlrun.run_id), code) from None


def _how_to_resume(run_dir: Path, cfg: RunConfig, why: str, run_id: str) -> str:
    last = peek(run_dir, cfg)
    if last is None:
        return (
            f"{run_dir}: {why} before its first epoch finished (MLflow run {run_id} marked "
            "KILLED); the same command starts it again"
        )
    return (
        f"{run_dir}: {why} after epoch {last.epoch} (MLflow run {run_id} marked KILLED); "
        f"run the same command again to resume from epoch {last.epoch + 1} (last.pt), or "
        "add --fresh to start over"
    )


def history_png(histories: dict[str, list[dict[str, float]]], title: str) -> bytes:
    """Training loss and held-out accuracy per epoch (a line per run)."""
    from emostream.training.evaluate import _png, _pyplot

    plt = _pyplot()
    fig, (lx, ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for label, rows in histories.items():
        epochs = [r["epoch"] for r in rows]
        lx.plot(epochs, [r["train_loss"] for r in rows], label=label)
        ax.plot(
            epochs, [r["train_accuracy"] for r in rows], "--", alpha=0.6, label=f"{label} train"
        )
        if all("holdout_accuracy" in r for r in rows):
            ax.plot(epochs, [r["holdout_accuracy"] for r in rows], label=f"{label} held out")
    lx.set(xlabel="epoch", ylabel="training loss (augmented, smoothed labels)")
    ax.set(xlabel="epoch", ylabel="accuracy")
    for a in (lx, ax):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title)
    return _png(fig)


def derived_card(
    parent: ModelCard,
    version: str,
    description: str,
    info: dict[str, Any],
    evaluation: list[Evaluation],
    notes: list[str],
    inherited: list[str] | None = None,
    **update: Any,
) -> ModelCard:
    """The card of a version made from ``parent`` rather than trained (int8, a temperature):
    the parent's, with the new number, a source naming the parent and this run
    (``info`` from :func:`write_info`), its own figures, and ``notes`` after the parent's
    (``inherited``: those of the parent's notes that stay true, default all)."""
    import emostream

    source = parent.source.model_copy(
        update={
            "version": emostream.__version__,
            "description": description,
            "run_id": info["run_id"],
            "data": info["data"],
            "parent": parent.ref,
        }
    )
    return parent.model_copy(
        update={
            "version": version,
            "source": source,
            "evaluation": evaluation,
            "sha256": "",
            "created": datetime.now(UTC),
            "notes": [*(parent.notes if inherited is None else inherited), *notes],
            **update,
        }
    )


def publish(
    run_dir: Path,
    repo: ModelRepository,
    card: ModelCard,
    exported: Exported,
    extra: dict[str, bytes],
    experiment: str,
    promote: bool = False,
    replace: bool = False,
) -> ModelCard:
    """Register the version (with ``check.npz`` and ``extra``), log it to the run, register
    it in MLflow, write ``exported.json``; move production too when ``promote``."""
    info = run_info(run_dir)
    files = {"check.npz": exported.check_npz(), **extra}
    folder = repo.register(card, exported.onnx, files, replace=replace)
    card = repo.card(card.name, card.version)
    tracking = Tracking(info["tracking_uri"], None)
    with tracking.run(experiment, run_dir.name, info["run_id"]) as mlrun:
        mlrun.metrics({"onnx_parity_max_abs_diff": exported.max_abs_diff})
        for name in ("model.onnx", "model.json", "check.npz"):
            mlrun.artifact(folder / name, "model")
        mlrun.tag(VERSION_TAG, card.version)
        source = f"{mlrun.artifact_uri}/model"
    number = tracking.register(card.name, card.version, source, info["run_id"], replace=replace)
    if replace:  # the aliases that named the old files name the new ones in MLflow too
        for alias, target in repo.aliases(card.name).items():
            if alias in (PRODUCTION, SHADOW) and target == card.version:
                tracking.client.set_registered_model_alias(card.name, alias, number)
    record = {
        "model": card.ref,
        "version": card.version,
        "mlflow_version": number,
        "onnx_max_abs_diff": exported.max_abs_diff,
        "parity_inputs": exported.compared,
        "sha256": card.sha256,
    }
    (run_dir / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if promote:
        from emostream.training.registry import move_alias

        move_alias(repo, tracking, card.name, card.version)
    return card
