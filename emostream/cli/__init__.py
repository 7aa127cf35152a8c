"""The ``emostream`` command: one module per command or group, registered here.

Options that are settings are made from the settings fields (``emostream.cli.options``);
every setting is also read from ``EMOSTREAM_*`` (``emostream settings`` lists them).
"""

from __future__ import annotations

import sys

import typer

from emostream.cli.analyze import analyze
from emostream.cli.client import client
from emostream.cli.common import EXIT_FAILED_FILES, EXIT_MODEL_MISSING, EXIT_USAGE
from emostream.cli.models import app as models_app
from emostream.cli.serve import serve
from emostream.cli.train import app as train_app
from emostream.cli.train import tune_app
from emostream.cli.worker import worker
from emostream.dashboards.cli import app as dashboards_app
from emostream.extras import EXIT_MISSING_EXTRA, MissingExtraError
from emostream.settings import reference_markdown

__all__ = ["EXIT_FAILED_FILES", "EXIT_MODEL_MISSING", "EXIT_USAGE", "app", "main"]


def _bench_app() -> typer.Typer:
    """``emostream bench``: the benchmarks of a checkout; an installed wheel has none."""
    try:
        from emostream.bench.cli import app as bench_app
    except ModuleNotFoundError as exc:
        if exc.name not in ("emostream.bench", "emostream.bench.cli"):
            raise
        bench_app = typer.Typer(help="Benchmarks: run them from a checkout of the repository.")

        @bench_app.callback(invoke_without_command=True)
        def absent() -> None:
            typer.echo(
                "emostream: the benchmarks are not part of the installed package; run them "
                "from a checkout: pip install -e '.[bench]', then emostream bench …",
                err=True,
            )
            raise typer.Exit(EXIT_USAGE)

    return bench_app


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Real-time emotion detection from faces and voices.",
)
app.command()(serve)
app.command()(worker)
app.command()(analyze)
app.command()(client)
app.add_typer(models_app, name="models")
app.add_typer(_bench_app(), name="bench")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(train_app, name="train")
app.add_typer(tune_app, name="tune")


@app.command("settings")
def settings_reference() -> None:
    """Print every setting as Markdown (docs/SETTINGS.md): variables, defaults, meaning."""
    typer.echo(reference_markdown(), nl=False)


def main() -> None:
    try:
        app()
    except MissingExtraError as exc:  # a lean install ran a command that needs an extra
        typer.echo(f"emostream: {exc}", err=True)
        sys.exit(EXIT_MISSING_EXTRA)
