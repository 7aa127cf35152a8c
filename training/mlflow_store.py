"""MLflow: experiment runs, the model registry and its aliases, local unless told otherwise.

With nothing configured the tracking store is a SQLite file and an artefact folder inside
the model repository (``<model_root>/mlflow/``), so a fresh machine needs no server;
``MLFLOW_TRACKING_URI`` points every command at a shared one instead. The registry mirrors
the emostream repository: each repository version is an MLflow model version tagged with
its repository number (``emostream.version``), and the ``production`` alias is an MLflow
alias (not a deprecated stage). :func:`move_alias` is the one place both move together.

Every run is tagged with the host and pid of the process that has it open, so a run whose
process died without a word (``kill -9``, a lost machine) can be told from one still going:
opening any run first marks such runs of its experiment on this host KILLED.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emostream.extras import require

log = logging.getLogger(__name__)

VERSION_TAG = "emostream.version"
#: the process that has a run open: reap_stale marks the run KILLED once it is gone
PID_TAG, HOST_TAG = "emostream.pid", "emostream.host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def local_store(model_root: Path) -> Path:
    return model_root / "mlflow"


def tracking_uri(model_root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file beside the model repository."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    store = local_store(model_root)
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


@dataclass
class Tracking:
    """One tracking store (and its registry)."""

    uri: str
    artifact_root: Path | None  # None: the server decides (shared tracking server)

    @classmethod
    def for_repository(cls, model_root: Path) -> Tracking:
        require("mlflow", extra="train")
        local = "MLFLOW_TRACKING_URI" not in os.environ
        uri = tracking_uri(model_root)
        return cls(uri, local_store(model_root) / "artifacts" if local else None)

    @property
    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None if self.artifact_root is None else self.artifact_root.as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    @contextmanager
    def run(self, experiment: str, name: str, run_id: str | None = None) -> Iterator[RunLog]:
        """A new run (or ``run_id`` reopened, RUNNING again: a stage added, a fit resumed),
        tagged with this host and pid; ends FINISHED, FAILED, or KILLED when stopped on
        purpose. Runs of ``experiment`` left RUNNING by dead processes are reaped first."""
        client = self.client
        self.reap_stale(experiment)
        owner = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        if run_id is None:
            run = client.create_run(self.experiment_id(experiment), run_name=name, tags=owner)
            run_id = str(run.info.run_id)
        else:
            client.update_run(run_id, status="RUNNING")
            for key, value in owner.items():
                client.set_tag(run_id, key, value)
        status = "FAILED"
        try:
            yield RunLog(client, run_id)
            status = "FINISHED"
        except BaseException as exc:
            # stopped on purpose (Optuna pruned it, Ctrl-C, SIGTERM: training.stop.Stopped is
            # a KeyboardInterrupt) rather than broken
            if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TrialPruned":
                status = "KILLED"
            raise
        finally:
            client.set_terminated(run_id, status=status)

    def reap_stale(self, experiment: str) -> list[str]:
        """Mark KILLED the runs of ``experiment`` still RUNNING whose process, on this host,
        is gone (``kill -9``: nothing ran to end them); returns their ids. Runs of other
        hosts, and of live processes, are left alone."""
        client = self.client
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        host = socket.gethostname()
        reaped = []
        for run in client.search_runs(
            [found.experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
        ):
            tags = run.data.tags
            pid = tags.get(PID_TAG, "")
            if tags.get(HOST_TAG) != host or not pid.isdigit() or _alive(int(pid)):
                continue
            client.set_terminated(run.info.run_id, status="KILLED")
            log.info(
                "MLflow run %s (%s) was left RUNNING by pid %s, which is gone: marked KILLED",
                run.info.run_id,
                run.info.run_name,
                pid,
            )
            reaped.append(str(run.info.run_id))
        return reaped

    # -- the registry ------------------------------------------------------------------
    def _versions(self, name: str) -> dict[str, str]:
        """repository version -> MLflow version number, for a registered model."""
        client = self.client
        from mlflow.exceptions import MlflowException

        try:
            found = client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return {}
        return {str(v.tags[VERSION_TAG]): str(v.version) for v in found if VERSION_TAG in v.tags}

    def register(
        self, name: str, version: str, source: str, run_id: str | None, replace: bool = False
    ) -> str:
        """Register repository ``version`` (once); returns its MLflow version number.

        ``replace`` (the repository version was re-written with new weights) retires the
        MLflow version that mirrored the old files and registers the new ones."""
        from mlflow.exceptions import MlflowException

        known = self._versions(name)
        client = self.client
        if version in known and not replace:
            return known[version]
        if version in known:
            client.delete_model_version(name, known[version])
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(
                name, description="emostream model repository mirror (emostream.version tag)"
            )
        mv = client.create_model_version(name, source, run_id=run_id, tags={VERSION_TAG: version})
        return str(mv.version)

    def alias(self, name: str, alias: str) -> str | None:
        """The repository version the MLflow alias names, or None."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
        tag = mv.tags.get(VERSION_TAG)
        return None if tag is None else str(tag)

    def set_alias(self, name: str, alias: str, version: str, source: str) -> None:
        number = self.register(name, version, source, None)
        self.client.set_registered_model_alias(name, alias, number)

    def delete_alias(self, name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        with suppress(MlflowException):
            self.client.delete_registered_model_alias(name, alias)


@dataclass
class RunLog:
    """What a stage logs to its run."""

    client: Any
    run_id: str

    def params(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.client.log_param(self.run_id, k, v)

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        for k, v in values.items():
            self.client.log_metric(self.run_id, k, float(v), step=step or 0)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    @property
    def artifact_uri(self) -> str:
        return str(self.client.get_run(self.run_id).info.artifact_uri)
