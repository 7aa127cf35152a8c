"""The Grafana dashboards of this folder as data: panels and their PromQL.

One reader for the push command, the panel preview and the tests, so all three see the
same panels. Grafana's own variables (``$__rate_interval``, ``$model`` …) are not PromQL;
:func:`promql` replaces them the way Grafana would before a query reaches Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The installed folder holding the dashboard JSON files (this package).
DASHBOARD_DIR = Path(__file__).resolve().parent

#: What Grafana substitutes for its built-in interval variables, for evaluating queries
#: outside Grafana: a range long enough to hold several 5 s scrapes.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class Target:
    """One query of a panel."""

    ref_id: str
    expr: str
    legend: str
    instant: bool
    format: str  # "time_series", "heatmap" or "table"


@dataclass(frozen=True)
class Panel:
    id: int
    title: str
    type: str  # timeseries, stat, gauge, heatmap, table, bargauge
    unit: str
    targets: tuple[Target, ...]
    thresholds: tuple[tuple[float | None, str], ...]  # (from value, colour); first is base
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class Dashboard:
    path: Path
    model: Mapping[str, Any]

    @property
    def uid(self) -> str:
        return str(self.model["uid"])

    @property
    def title(self) -> str:
        return str(self.model["title"])

    @property
    def panels(self) -> list[Panel]:
        """Every panel with queries, rows flattened, in layout order."""
        return [_panel(p) for p in _walk(self.model.get("panels", [])) if p.get("targets")]

    @property
    def variables(self) -> dict[str, str]:
        """Template variable → the value meaning "all" (its ``allValue``, else ``.*``)."""
        out: dict[str, str] = {}
        for v in self.model.get("templating", {}).get("list", []):
            if v.get("type") == "datasource":
                continue
            out[str(v["name"])] = str(v.get("allValue") or ".*")
        return out

    def promql(self, expr: str) -> str:
        """``expr`` with this dashboard's variables set to "all" and Grafana's built-ins."""
        return promql(expr, self.variables)


def _walk(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for p in panels:
        yield p
        yield from _walk(p.get("panels", []))  # collapsed rows keep their panels inside


def _panel(p: Mapping[str, Any]) -> Panel:
    defaults = p.get("fieldConfig", {}).get("defaults", {})
    steps = defaults.get("thresholds", {}).get("steps", [])
    return Panel(
        id=int(p["id"]),
        title=str(p["title"]),
        type=str(p["type"]),
        unit=str(defaults.get("unit", "")),
        targets=tuple(
            Target(
                ref_id=str(t.get("refId", "A")),
                expr=str(t["expr"]),
                legend=str(t.get("legendFormat", "")),
                instant=bool(t.get("instant", False)),
                format=str(t.get("format", "time_series")),
            )
            for t in p["targets"]
        ),
        thresholds=tuple((s.get("value"), str(s.get("color", ""))) for s in steps),
        raw=p,
    )


def promql(expr: str, variables: Mapping[str, str] | None = None) -> str:
    """Replace Grafana variables in ``expr``; an unknown variable is an error, not a guess."""
    values = {**BUILTINS, **(variables or {})}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(sub, expr)


def metric_names(expr: str) -> set[str]:
    """The ``emostream_*`` metric families ``expr`` reads (histogram suffixes stripped)."""
    names = set(re.findall(r"\bemostream_[a-z_]+", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def load(folder: Path = DASHBOARD_DIR) -> list[Dashboard]:
    """Every ``*.json`` dashboard in ``folder``, sorted by file name."""
    found = []
    for path in sorted(folder.glob("*.json")):
        model = json.loads(path.read_text())
        if not isinstance(model, dict) or "uid" not in model or "panels" not in model:
            raise ValueError(f"{path}: not a Grafana dashboard (needs uid and panels)")
        found.append(Dashboard(path, model))
    return found
