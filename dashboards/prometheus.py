"""A small Prometheus HTTP API client: the queries a dashboard panel makes, and nothing else.

Used to evaluate the dashboards' PromQL outside Grafana (the panel preview and the tests).
A query Prometheus rejects raises :class:`PromQLError` with Prometheus' own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


class PromQLError(RuntimeError):
    """Prometheus refused a query (bad syntax, unknown function …) or could not be reached."""


@dataclass
class Series:
    """One result series: its labels and (time, value) points (a single point if instant)."""

    labels: dict[str, str]
    times: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)


def check_url(url: str) -> None:
    """An http(s) URL with a host, or ValueError saying what is wrong with it."""
    parts = httpx.URL(url)
    if parts.scheme not in ("http", "https") or not parts.host:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")


class Prometheus:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            resp = self._http.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as exc:
            raise PromQLError(f"Prometheus at {self.url} not reachable: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            raise PromQLError(f"{resp.status_code} from Prometheus: {resp.text[:200]}") from None
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def instant(self, expr: str, at: float | None = None) -> list[Series]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return _series(self._get("/api/v1/query", params))

    def range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}"}
        return _series(self._get("/api/v1/query_range", params))

    def get(self, path: str, **params: str) -> Any:
        """Any other API endpoint's ``data`` (``/api/v1/rules``, ``/api/v1/alerts`` …)."""
        return self._get(path, params)


def _series(data: dict[str, Any]) -> list[Series]:
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        result = [{"metric": {}, "value": result}]
    out = []
    for r in result:
        points = r.get("values") or [r["value"]]
        t = np.array([float(p[0]) for p in points])
        v = np.array([float(p[1]) for p in points])  # "NaN", "+Inf" parse as floats
        out.append(Series(dict(r.get("metric", {})), t, v))
    return out
