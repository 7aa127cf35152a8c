"""Draw what the Grafana dashboards would show, from a real Prometheus, as PNGs.

For people without a Grafana at hand (and for the tests, since Grafana cannot be installed
here): every panel's queries are evaluated over a time range exactly as Grafana would send
them, and drawn with matplotlib in the panel's own layout, thresholds and units. One PNG per
panel, and one per dashboard laid out on Grafana's 24-column grid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from tqdm import tqdm

from emostream.dashboards.catalog import Dashboard, Panel, Target
from emostream.dashboards.prometheus import Prometheus, Series

GRID_W_IN = 0.8  # inches per grid column
GRID_H_IN = 0.42  # inches per grid row (Grafana's rows are 30 px, columns ~1/24 of 1900 px)
COLOURS = {"green": "#3a9a3a", "yellow": "#e0b400", "red": "#d23b3b", "orange": "#f08a24"}


@dataclass
class PanelData:
    panel: Panel
    results: list[tuple[Target, list[Series]]]

    @property
    def empty(self) -> bool:
        return not any(series for _, series in self.results)


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's ``{{label}}`` legend format; the label set itself when there is none."""
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"


def query(
    prom: Prometheus, dash: Dashboard, panel: Panel, start: float, end: float, step_s: float
) -> PanelData:
    """Evaluate each target of ``panel`` the way Grafana would (instant or range)."""
    results = []
    for t in panel.targets:
        expr = dash.promql(t.expr)
        series = prom.instant(expr, end) if t.instant else prom.range(expr, start, end, step_s)
        results.append((t, series))
    return PanelData(panel, results)


def _fmt(value: float, unit: str) -> str:
    if np.isnan(value):
        return "NaN"
    if unit == "s":
        return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "percentunit":
        return f"{value * 100:.1f} %"
    if unit in ("fps", "reqps"):
        return f"{value:.1f} /s"
    return f"{value:.3g}"


def _threshold_colour(panel: Panel, value: float) -> str:
    colour = "green"
    for start, c in panel.thresholds:
        if start is None or value >= start:
            colour = c
    return COLOURS.get(colour, colour)


def _clock(ax: Axes) -> None:
    """Unix seconds on the x axis, shown as local clock time like Grafana does."""
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda v, _: datetime.fromtimestamp(v).strftime("%H:%M:%S"))
    )
    ax.xaxis.set_major_locator(MaxNLocator(5))


def _draw_timeseries(ax: Axes, data: PanelData) -> None:
    panel = data.panel
    custom = panel.raw.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    lines = [(legend(t.legend, s.labels), s) for t, series in data.results for s in series]
    lines.sort(key=lambda x: x[0])
    scale = 1e3 if panel.unit == "s" else (100.0 if panel.unit == "percentunit" else 1.0)
    if stacked and lines:
        grid = np.unique(np.concatenate([s.times for _, s in lines]))
        ys = [np.nan_to_num(np.interp(grid, s.times, s.values, left=0, right=0)) for _, s in lines]
        ax.stackplot(grid, *[y * scale for y in ys], labels=[n for n, _ in lines])
    else:
        for name, s in lines:
            ax.plot(s.times, s.values * scale, label=name, lw=1.2)
    if custom.get("thresholdsStyle", {}).get("mode") == "line":
        for start, colour in panel.thresholds:
            if start is not None:
                ax.axhline(start * scale, color=COLOURS.get(colour, colour), ls="--", lw=1)
    ax.set_ylabel(
        {"s": "ms", "percentunit": "%", "fps": "frames/s", "reqps": "/s"}.get(panel.unit, "")
    )
    _clock(ax)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=6, loc="upper left", ncol=2 if len(lines) > 4 else 1)


def _last(data: PanelData) -> list[tuple[str, float]]:
    out = []
    for t, series in data.results:
        for s in series:
            finite = s.values[~np.isnan(s.values)]
            out.append((legend(t.legend, s.labels), float(finite[-1]) if len(finite) else np.nan))
    return out


def _draw_stat(ax: Axes, data: PanelData) -> None:
    values = _last(data) or [("", np.nan)]
    mappings = {}
    for m in data.panel.raw.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        mappings.update({k: v["text"] for k, v in m.get("options", {}).items()})
    ax.axis("off")
    for i, (name, value) in enumerate(values):
        y = 1 - (i + 0.5) / len(values)
        key = str(int(value)) if not np.isnan(value) and value == int(value) else ""
        text = mappings.get(key) or _fmt(value, data.panel.unit)
        ax.text(
            0.5,
            y,
            text,
            ha="center",
            va="center",
            fontsize=18 if len(values) == 1 else 11,
            color=_threshold_colour(data.panel, value),
            weight="bold",
        )
        if len(values) > 1 or name not in ("", "value"):
            ax.text(0.5, y - 0.3 / len(values), name, ha="center", va="center", fontsize=7)


def _draw_gauge(ax: Axes, data: PanelData) -> None:
    defaults = data.panel.raw.get("fieldConfig", {}).get("defaults", {})
    lo, hi = float(defaults.get("min", 0)), float(defaults.get("max", 1))
    values = _last(data) or [("", np.nan)]
    steps = list(data.panel.thresholds)
    for i, (name, value) in enumerate(values):
        y = len(values) - i
        for j, (start, colour) in enumerate(steps):  # threshold bands under the bar
            a = lo if start is None else start
            b = steps[j + 1][0] if j + 1 < len(steps) else hi
            ax.barh(
                y, (b or hi) - a, left=a, height=0.25, color=COLOURS.get(colour, colour), alpha=0.35
            )
        shown = min(max(value, lo), hi) if not np.isnan(value) else lo
        ax.barh(
            y + 0.3, shown - lo, left=lo, height=0.3, color=_threshold_colour(data.panel, value)
        )
        ax.text(
            hi, y + 0.3, f" {_fmt(value, data.panel.unit)}", va="center", fontsize=9, weight="bold"
        )
        ax.text(lo, y - 0.3, name, va="center", fontsize=7)
    ax.set_xlim(lo, hi * 1.35)
    ax.set_ylim(0.3, len(values) + 0.8)
    ax.set_yticks([])
    ax.tick_params(labelsize=7)


def _draw_heatmap(ax: Axes, data: PanelData) -> None:
    series = [s for _, ss in data.results for s in ss]
    buckets = sorted(series, key=lambda s: float(s.labels.get("le", "inf")))
    if not buckets:
        return
    grid = np.unique(np.concatenate([s.times for s in buckets]))
    cum = np.array([np.nan_to_num(np.interp(grid, s.times, s.values)) for s in buckets])
    counts = np.diff(cum, axis=0, prepend=0)  # cumulative "le" buckets -> per bucket
    counts[counts < 0] = 0
    les = [s.labels.get("le", "?") for s in buckets]
    unit = data.panel.raw.get("options", {}).get("yAxis", {}).get("unit", "")
    names = [
        "> max" if le == "+Inf" else (f"≤{float(le) * 1e3:g} ms" if unit == "s" else f"≤{le}")
        for le in les
    ]
    x = grid
    ax.imshow(
        counts,
        aspect="auto",
        origin="lower",
        cmap="Oranges",
        interpolation="nearest",
        extent=(x[0], x[-1] if len(x) > 1 else x[0] + 1, -0.5, len(les) - 0.5),
    )
    ax.set_yticks(range(len(les)), names, fontsize=6)
    _clock(ax)
    ax.tick_params(labelsize=7)


def _draw_table(ax: Axes, data: PanelData) -> None:
    ax.axis("off")
    rows = [s.labels for _, ss in data.results for s in ss]
    cols = sorted({k for r in rows for k in r if k not in ("__name__", "job", "instance")})
    if not rows or not cols:
        return
    table = ax.table(
        cellText=[[r.get(c, "") for c in cols] for r in rows], colLabels=cols, loc="upper center"
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7)


DRAW: dict[str, Callable[[Axes, PanelData], None]] = {
    "timeseries": _draw_timeseries,
    "stat": _draw_stat,
    "gauge": _draw_gauge,
    "heatmap": _draw_heatmap,
    "table": _draw_table,
}


def draw(ax: Axes, data: PanelData) -> None:
    """One panel into ``ax``; "No data" exactly where Grafana would say so."""
    ax.set_title(data.panel.title, fontsize=9, loc="left")
    if data.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color="grey")
        return
    DRAW.get(data.panel.type, _draw_timeseries)(ax, data)


def panel_png(data: PanelData, path: Path) -> Path:
    g = data.panel.raw["gridPos"]
    fig = Figure(figsize=(max(4.0, g["w"] * GRID_W_IN), max(2.5, g["h"] * GRID_H_IN)))
    draw(fig.add_subplot(), data)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def dashboard_png(
    dash: Dashboard, panels: Sequence[PanelData], path: Path, subtitle: str = ""
) -> Path:
    """All panels on Grafana's grid: x, y, w, h from each panel's ``gridPos``."""
    raw = [*_rows(dash), *(d.panel.raw for d in panels)]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in raw)
    width, height = 24 * GRID_W_IN, rows * GRID_H_IN + 0.6
    fig = Figure(figsize=(width, height))
    fig.suptitle(f"{dash.title}  {subtitle}", x=0.01, ha="left", fontsize=12, weight="bold")
    top = 1 - 0.6 / height

    margin = 0.5 / width  # room for the tick labels of the leftmost panels

    def box(g: dict[str, int], pad: float = 0.35) -> tuple[float, float, float, float]:
        x0 = margin + (g["x"] + pad) / 24 * (1 - margin)
        w = (g["w"] - 2 * pad) / 24 * (1 - margin)
        h = (g["h"] - 2 * pad - 0.5) * GRID_H_IN / height
        y0 = top - (g["y"] + g["h"] - pad) * GRID_H_IN / height
        return x0, y0, w, max(h, 0.01)

    for row in _rows(dash):
        g = row["gridPos"]
        fig.text(
            0.005,
            top - (g["y"] + 0.7) * GRID_H_IN / height,
            row["title"],
            fontsize=11,
            weight="bold",
            color="#444",
        )
    for data in panels:
        draw(fig.add_axes(box(data.panel.raw["gridPos"])), data)
    fig.savefig(path, dpi=90)
    return path


def _rows(dash: Dashboard) -> list[dict]:
    return [p for p in dash.model["panels"] if p.get("type") == "row"]


def render(
    prom: Prometheus,
    dashboards: Sequence[Dashboard],
    out: Path,
    start: float,
    end: float,
    step_s: float = 5.0,
) -> dict[str, list[PanelData]]:
    """Query and draw every panel of every dashboard into ``out``; returns what was drawn."""
    out.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, list[PanelData]] = {}
    t0, t1 = datetime.fromtimestamp(start), datetime.fromtimestamp(end)
    span = f"{t0:%Y-%m-%d %H:%M:%S} to {t1:%H:%M:%S}"
    for dash in dashboards:
        data = [
            query(prom, dash, p, start, end, step_s)
            for p in tqdm(dash.panels, desc=dash.uid, unit="panel", leave=False)
        ]
        folder = out / dash.uid
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("*.png"):  # panels of an earlier version of the dashboard
            stale.unlink()
        for d in data:
            slug = re.sub(r"[^a-z0-9]+", "-", d.panel.title.lower()).strip("-")
            panel_png(d, folder / f"{d.panel.id:02d}-{slug}.png")
        dashboard_png(dash, data, out / f"{dash.uid}.png", span)
        drawn[dash.uid] = data
    return drawn
