"""``emostream dashboards push|preview``: ship the dashboards to a Grafana, or draw them from
a Prometheus. grafana-client and matplotlib are imported only by the command that needs them."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="The Grafana dashboards.")

# After ``app``: emostream.cli registers ``app`` when it is first imported, and that may be now.
from emostream.cli.common import EXIT_USAGE, fail  # noqa: E402
from emostream.extras import require  # noqa: E402


@app.command("push")
def dashboards_push(
    url: str = typer.Option(
        "http://localhost:3000", envvar="EMOSTREAM_GRAFANA_URL", help="Grafana base URL"
    ),
    token: str | None = typer.Option(
        None,
        envvar="EMOSTREAM_GRAFANA_TOKEN",
        help="service-account token (sent as Bearer); none = anonymous",
        show_default=False,
    ),
    folder: str = typer.Option(
        "emostream", envvar="EMOSTREAM_GRAFANA_FOLDER", help="folder title; created if missing"
    ),
    folder_uid: str | None = typer.Option(
        None, envvar="EMOSTREAM_GRAFANA_FOLDER_UID", help="default: made from the title"
    ),
    datasource_uid: str | None = typer.Option(
        None,
        envvar="EMOSTREAM_GRAFANA_DATASOURCE_UID",
        help="uid of that Grafana's Prometheus datasource, if not prometheus (the provisioned one)",
    ),
    directory: Path | None = typer.Option(
        None,
        "--dir",
        envvar="EMOSTREAM_DASHBOARDS_DIR",
        help="push the *.json of this folder (default: the bundled dashboards)",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be sent, send nothing"),
) -> None:
    """Create or replace every dashboard in a running Grafana (exit 2 unreachable, 4 refused)."""
    require("grafana_client", extra="dashboards")
    from emostream.dashboards.catalog import DASHBOARD_DIR
    from emostream.dashboards.push import PushError, push

    try:
        push(
            url,
            token,
            folder=folder,
            folder_uid=folder_uid,
            datasource_uid=datasource_uid,
            directory=directory or DASHBOARD_DIR,
            dry_run=dry_run,
            echo=typer.echo,
            note=lambda line: typer.echo(f"emostream: {line}", err=True),
        )
    except PushError as exc:
        raise fail(str(exc), exc.code) from None


@app.command("preview")
def dashboards_preview(
    prometheus: str = typer.Option(
        "http://localhost:9090", "--prometheus", help="Prometheus base URL to query"
    ),
    minutes: float = typer.Option(15.0, min=0.1, help="time range: the last N minutes"),
    step: float = typer.Option(5.0, min=0.1, help="seconds between points"),
    out: Path = typer.Option(Path("dashboard-preview"), help="folder for the PNGs"),
    directory: Path | None = typer.Option(
        None, "--dir", help="dashboards to draw (default: the bundled ones)"
    ),
) -> None:
    """Draw every dashboard panel from a real Prometheus into PNGs (no Grafana needed)."""
    require("matplotlib", extra="dashboards")
    import time

    import httpx

    from emostream.dashboards import catalog, preview
    from emostream.dashboards.prometheus import Prometheus, PromQLError, check_url

    try:
        check_url(prometheus)
        dashboards = catalog.load(directory or catalog.DASHBOARD_DIR)
    except (ValueError, OSError, httpx.InvalidURL) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if not dashboards:
        raise fail(f"no dashboard JSON in {directory}", EXIT_USAGE)
    end = time.time()
    try:
        with Prometheus(prometheus) as prom:
            drawn = preview.render(prom, dashboards, out, end - minutes * 60, end, step)
    except PromQLError as exc:
        raise fail(str(exc), EXIT_USAGE if "not reachable" in str(exc) else 1) from None
    for uid, panels in drawn.items():
        empty = sum(d.empty for d in panels)
        typer.echo(f"{out / uid}.png  {len(panels)} panels, {empty} without data")
