"""deploy/grafana/tracer-pod-starts.json: every query names metrics the
daemon exports, with labels it gives them; the panels cover what an
operator looks at (latency per layer, failures by layer and cause, drops,
lag).  scripts/render_dashboard.py draws it from a real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tracer.app.metrics import DaemonMetrics, EventCounts, PipelineCounts, SpanCounts

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tracer-pod-starts.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported() -> dict[str, set[str]]:
    """Metric family name -> its label names, from a daemon's registry with every source."""
    metrics = DaemonMetrics(
        lambda: EventCounts(1, 0, 0, 0.01, {"exec": 0}), lambda: SpanCounts(0, 0, 0, 0),
        lambda: PipelineCounts(kernel={"x": 0}, cri={}, cri_decoder={}, endpoints_reaped=0, tables={"t": 1}),
        build_info={"version": "v", "python": "p", "bcc": "b", "kernel": "k"})
    metrics.pod_failures.labels(layer="runc", cause="oom_killed").inc()
    families = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        labels = {name for sample in family.samples for name in sample.labels} - {"le"}
        families[family.name] = labels
    return families


def queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_every_query_names_exported_metrics_and_labels():
    families = exported()
    for expr in queries():
        names = re.findall(r"\b((?:tracer|process)_[a-z_]+)\b", expr)
        assert names, expr
        for name in names:
            base = next((name.removesuffix(s) for s in SUFFIXES if name.removesuffix(s) in families), name)
            assert base in families, (name, expr)
            for group in re.findall(r"by \(([^)]*)\)", expr):
                for label in (g.strip() for g in group.split(",")):
                    if label and label not in ("le", "instance"):
                        assert any(label in families[n] for n in families if n.startswith(base[:12])), (label, expr)


def test_the_panels_an_operator_needs():
    text = " ".join(queries())
    assert "tracer_pod_start_layer_duration_seconds_bucket" in text and "by (le, layer)" in text
    assert "by (layer, cause)" in text and "tracer_pod_start_failures_total" in text
    for name in ("tracer_events_lost_total", "tracer_dropped_total", "tracer_spans_dropped_total",
                 "tracer_capture_lag_seconds"):
        assert name in text, name
    dashboard = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
