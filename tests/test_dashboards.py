"""The Grafana dashboards as data: well-formed, on the provisioned datasource, real metrics.

Whether every panel's PromQL parses and returns data is checked against a real Prometheus
scraping a real server (tests/webrtc/test_observability.py); these checks need nothing.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from emostream import metrics
from emostream.bench.procs import EMOSTREAM
from emostream.dashboards import catalog

DASHBOARDS = catalog.load()
DS = {"type": "prometheus", "uid": "prometheus"}


def test_the_two_dashboards_exist() -> None:
    assert {d.uid for d in DASHBOARDS} == {"emostream-overview", "emostream-models"}
    for d in DASHBOARDS:
        assert "emostream" in d.model["tags"]


@pytest.mark.parametrize("dash", DASHBOARDS, ids=lambda d: d.uid)
def test_panels_are_well_formed(dash: catalog.Dashboard) -> None:
    raw = list(catalog._walk(dash.model["panels"]))
    ids = [p["id"] for p in raw]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in raw:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = set(
            itertools.product(range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"]))
        )
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p.get("description"), f"{p['title']}: say what the panel means"
        assert p["datasource"] == DS, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]


@pytest.mark.parametrize("dash", DASHBOARDS, ids=lambda d: d.uid)
def test_queries_use_exported_metrics_and_known_variables(dash: catalog.Dashboard) -> None:
    known = metrics.exported_names() | {"up"}
    for panel in dash.panels:
        for target in panel.targets:
            assert not catalog.metric_names(target.expr) - known, (panel.title, target.expr)
            assert "$" not in dash.promql(target.expr)


def test_the_panels_the_issue_asks_for() -> None:
    by_uid = {d.uid: d for d in DASHBOARDS}
    overview = " ".join(t.expr for p in by_uid["emostream-overview"].panels for t in p.targets)
    for name in (
        "emostream_active_sessions",
        "emostream_frames_in_total",
        "emostream_frames_processed_total",
        "emostream_frames_dropped_total",
        "emostream_batch_size_bucket",
        "emostream_queue_depth",
        "emostream_worker_info",
    ):
        assert name in overview, name
    for stage in ("decode", "queue", "inference", "end_to_end"):
        assert f'stage="{stage}"' in overview
    assert any(p.type == "heatmap" for p in by_uid["emostream-overview"].panels)
    models = by_uid["emostream-models"]
    gauges = {t.expr for p in models.panels if p.type == "gauge" for t in p.targets}
    assert any("emostream_drift_psi" in e for e in gauges)
    assert any("emostream_drift_js_distance" in e for e in gauges)
    psi = next(p for p in models.panels if p.type == "gauge" and "psi" in p.targets[0].expr)
    assert (0.25, "red") in psi.thresholds
    exprs = " ".join(t.expr for p in models.panels for t in p.targets)
    assert "emostream_predictions_total" in exprs and "emostream_model_info" in exprs


def test_the_models_dashboard_shows_promotion_and_shadow_evaluation() -> None:
    models = next(d for d in DASHBOARDS if d.uid == "emostream-models")
    by_title = {p.title: " ".join(t.expr for t in p.targets) for p in models.panels}
    agreement = by_title["Shadow agreement with production"]
    assert "rate(emostream_shadow_agreement_total" in agreement.split(" / ")[0]
    assert "rate(emostream_shadow_faces_total" in agreement.split(" / ")[1]
    assert "by (model, version)" in agreement
    assert "emostream_shadow_predictions_total" in by_title["Shadow candidate class mix"]
    assert "by (model, version, class)" in by_title["Shadow candidate class mix"]
    assert "emostream_model_loads_total" in by_title["Model loads and refusals"]


def test_a_class_mix_never_adds_face_and_voice_classes() -> None:
    """Face ``angry`` and voice ``angry`` are different models' classes: every query that
    splits predictions by class selects one modality, and each modality has its panel."""
    mixes = {}
    for dash in DASHBOARDS:
        for panel in dash.panels:
            for target in panel.targets:
                if "emostream_predictions_total" in target.expr and "(label)" in target.expr:
                    n = target.expr.count("emostream_predictions_total")
                    face = target.expr.count('modality="face"')
                    voice = target.expr.count('modality="voice"')
                    assert (face, voice) in ((n, 0), (0, n)), (panel.title, target.expr)
                    mixes[panel.title] = "face" if face else "voice"
    assert sorted(mixes.values()) == ["face", "voice"], mixes


def test_unknown_grafana_variables_are_an_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        catalog.promql("rate(x[$nope])")
    assert catalog.promql('x{m=~"${model}"}[$__rate_interval]', {"model": ".*"}) == (
        'x{m=~".*"}[1m]'
    )


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--prometheus", "ftp://prometheus:9090"], "not an http(s) URL"),
        (["--prometheus", "http://"], "not an http(s) URL"),
        (["--prometheus", "http://127.0.0.1:1"], "not reachable"),
        (["--dir", "{empty}"], "no dashboard JSON"),
        (["--dir", "{bad}"], "not a Grafana dashboard"),
    ],
)
def test_preview_bad_input_exits_2_with_a_reason(args: list[str], why: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text('{"title": "no uid"}')
    argv = [a.format(empty=tmp_path / "empty", bad=tmp_path / "bad") for a in args]
    proc = subprocess.run(
        [*EMOSTREAM, "dashboards", "preview", *argv, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert why in proc.stderr
    assert "Traceback" not in proc.stderr
