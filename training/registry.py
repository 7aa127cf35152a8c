"""Moving an alias in the model repository and the MLflow registry together, or in neither.

The repository is what serving processes watch; MLflow is where people look. MLflow moves
first: if that fails nothing has changed; if the repository write then fails, the MLflow
alias is put back, so the two never disagree. Without MLflow installed and with no registry
configured (a lean serving box) there is nothing to disagree with and only the repository
moves; with a registry but no MLflow the command refuses and says what to install.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from emostream.models.repository import PRODUCTION, ModelMissingError, ModelRepository
from emostream.training.mlflow_store import Tracking, local_store


def tracking_for(repo: ModelRepository) -> Tracking | None:
    """The registry beside this repository, or None when there is none to keep in step."""
    configured = "MLFLOW_TRACKING_URI" in os.environ
    has_local = (local_store(repo.root) / "mlflow.db").is_file()
    if importlib.util.find_spec("mlflow") is None:
        if configured or has_local:
            from emostream.extras import require

            require("mlflow", extra="train")  # raises MissingExtraError with the pip line
        return None
    return Tracking.for_repository(repo.root)


def _source(repo: ModelRepository, name: str, version: str) -> str:
    """Where the version's files are, for an MLflow model version made at promotion time
    (models that were imported, not trained, have no run to point at)."""
    return Path(repo.version_dir(name, version)).resolve().as_uri()


def move_alias(
    repo: ModelRepository,
    tracking: Tracking | None,
    name: str,
    version: str,
    alias: str = PRODUCTION,
) -> None:
    if version not in repo.versions(name):
        raise ModelMissingError(name, f"cannot point {alias!r} at missing version {version!r}")
    if tracking is None:
        repo.set_alias(name, version, alias)
        return
    before = tracking.alias(name, alias)
    tracking.set_alias(name, alias, version, _source(repo, name, version))
    try:
        repo.set_alias(name, version, alias)
    except BaseException:
        _restore(tracking, repo, name, alias, before)
        raise


def rollback(
    repo: ModelRepository, tracking: Tracking | None, name: str, alias: str = PRODUCTION
) -> str:
    target = repo.rollback_target(name, alias)
    if tracking is None:
        return repo.rollback(name, alias)
    before = tracking.alias(name, alias)
    tracking.set_alias(name, alias, target, _source(repo, name, target))
    try:
        return repo.rollback(name, alias)
    except BaseException:
        _restore(tracking, repo, name, alias, before)
        raise


def _restore(
    tracking: Tracking, repo: ModelRepository, name: str, alias: str, before: str | None
) -> None:
    if before is None:
        tracking.delete_alias(name, alias)
    else:
        tracking.set_alias(name, alias, before, _source(repo, name, before))
