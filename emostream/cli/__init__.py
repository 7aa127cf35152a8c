"""The ``emostream`` command: one module per command or group, registered here.

Options that are settings are made from the settings fields (``emostream.cli.options``);
every setting is also read from ``EMOSTREAM_*`` (``emostream settings`` lists them).
"""

from __future__ import annotations

import sys

import typer

from emostream.bench.cli import app as bench_app
from emostream.cli.analyze import analyze
from emostream.cli.client import client
from emostream.cli.common import EXIT_FAILED_FILES, EXIT_MODEL_MISSING, EXIT_USAGE
from emostream.cli.models import app as models_app
from emostream.cli.serve import serve
from emostream.cli.worker import worker
from emostream.dashboards.cli import app as dashboards_app
from emostream.extras import EXIT_MISSING_EXTRA, MissingExtraError
from emostream.settings import reference_markdown

__all__ = ["EXIT_FAILED_FILES", "EXIT_MODEL_MISSING", "EXIT_USAGE", "app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Real-time emotion detection from faces (voice analysis is not built yet).",
)
app.command()(serve)
app.command()(worker)
app.command()(analyze)
app.command()(client)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(dashboards_app, name="dashboards")


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
