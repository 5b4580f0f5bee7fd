"""Prometheus metrics and health endpoints, from replayed real captures (no BPF)."""

from __future__ import annotations

from pathlib import Path

import pytest
from http_probe import http_get
from prometheus_client.parser import text_string_to_metric_families

from exporters.status import pod_status
from tracer.app.metrics import (
    LAYERS,
    CaptureHealth,
    DaemonMetrics,
    EventCounts,
    Health,
    MetricsServer,
    SpanCounts,
    layer_counts,
    layer_durations,
    parse_address,
    scrape_samples,
)
from tracer.pipeline.pipeline import replay
from tracer.spans.model import Span, Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def traces(name: str) -> list[Trace]:
    return replay(str(FIXTURES / f"{name}.rec")).traces()


def test_layers_of_one_pod_start():
    trace = traces("one-pod")[0]
    durations = layer_durations(trace)
    layers = [layer for layer, _ in durations]
    # kubelet's four CRI calls of the start (RunPodSandbox, PodSandboxStatus,
    # CreateContainer, StartContainer) and containerd's handling of each; a
    # sandbox and one app container: two of each runtime step; two CNI
    # plugins (host-local runs inside bridge, in the same layer)
    assert sorted(layers) == sorted(["kubelet", "containerd"] * 4 + ["cni"] * 2
                                    + ["shim", "runc_create", "runc_init", "runc_start", "process"] * 2)
    spans = {s.name: s for s in trace.spans}
    create = spans["runc create"]
    assert ("runc_create", (create.end_ns - create.start_ns) / 1e9) in durations
    assert ("shim", (spans["shim start"].end_ns - spans["shim start"].start_ns) / 1e9) in durations
    server = next(s for s in trace.spans if s.kind == "SERVER" and s.attributes["rpc.method"] == "StartContainer")
    assert ("containerd", (server.end_ns - server.start_ns) / 1e9) in durations
    assert all(seconds >= 0 for _, seconds in durations)


def test_the_root_does_not_count_its_cri_pair_counts_for_kubelet_and_containerd():
    def span(span_id, parent, service, name, kind="INTERNAL", end_ns=2_000_000):
        return Span("t", span_id, parent, name, service, 0, end_ns, kind=kind)

    trace = Trace("t", "pod", [span("r", None, "kubelet", "pod start", end_ns=3_000_000),
                               span("k", "r", "kubelet", "runtime.v1.RuntimeService/RunPodSandbox", "CLIENT"),
                               span("c", "k", "containerd", "runtime.v1.RuntimeService/RunPodSandbox", "SERVER",
                                    1_000_000),
                               span("s", "c", "containerd", "containerd sandbox")], {})
    assert layer_durations(trace) == [("kubelet", 0.002), ("containerd", 0.001)]


def test_pod_status():
    assert pod_status(traces("one-pod")[0]) == "ok"
    # its entrypoint exits with 3 right after start: the pod did not come up
    exiting = traces("exiting-pod")[0]
    assert pod_status(exiting) == "error"
    assert exiting.root.attributes["error.type"] == "application_error"
    failed = traces("one-pod")[0]
    failed.root.status = "ERROR"
    assert pod_status(failed) == "error"
    partial = traces("one-pod")[0]
    partial.root.attributes["tracer.partial"] = True
    assert pod_status(partial) == "partial"


def test_exposition_has_histograms_per_layer_and_the_counters():
    metrics = DaemonMetrics(lambda: EventCounts(100, 3, 1), lambda: SpanCounts(queued=5, sent=40, failed=2,
                                                                                dropped=7))
    metrics.observe(traces("ten-pods"))
    text = metrics.exposition().decode()
    counts = layer_counts(text)
    assert set(counts) == set(LAYERS)
    assert counts["kubelet"] == counts["containerd"] == 10 * 4  # four CRI calls per pod start
    for layer in ("cni", "shim", "runc_create", "runc_init", "runc_start", "process"):
        assert counts[layer] == 20, layer
    assert scrape_samples(text, "tracer_pod_start_duration_seconds_count") == {(): 10}
    assert scrape_samples(text, "tracer_pod_starts_total")[(("status", "ok"),)] == 10
    assert scrape_samples(text, "tracer_events_total") == {(): 100}
    assert scrape_samples(text, "tracer_events_lost_total") == {(): 3}
    assert scrape_samples(text, "tracer_events_undecodable_total") == {(): 1}
    assert scrape_samples(text, "tracer_spans_exported_total") == {(): 40}
    assert scrape_samples(text, "tracer_spans_dropped_total") == {(("reason", "queue_full"),): 7,
                                                                  (("reason", "export_failed"),): 2}
    assert scrape_samples(text, "tracer_spans_queued") == {(): 5}


def test_sources_not_there_yet_are_left_out():
    text = DaemonMetrics(lambda: None, None).exposition().decode()
    assert "tracer_events_total" not in text
    assert "tracer_spans_exported_total" not in text
    assert "tracer_pod_start_layer_duration_seconds_count" in text




def test_server_serves_metrics_health_and_readiness():
    health = Health(stale_after_s=30)
    server = MetricsServer(("127.0.0.1", 0), DaemonMetrics(), health).start()
    try:
        base = "http://{}:{}".format(*server.address)
        assert http_get(base + "/healthz")[0] == 200
        assert http_get(base + "/readyz") == (503, "not ready (BPF not attached yet, or stopping)\n")
        health.set_ready(True)
        assert http_get(base + "/readyz") == (200, "ready\n")
        status, text = http_get(base + "/metrics")
        assert status == 200 and "tracer_pod_start_layer_duration_seconds_bucket" in text
        assert http_get(base + "/nothing")[0] == 404
    finally:
        server.stop()


def test_health_goes_stale_without_beats():
    health = Health(stale_after_s=0.0)
    assert not health.live
    health = Health(stale_after_s=60)
    health.beat()
    assert health.live


@pytest.mark.parametrize("capture, live, ready, says", [
    (CaptureHealth(True, True, 0.01), True, True, "capture lag 0.010 s"),
    (CaptureHealth(False, True, 0.01), False, False, "drain thread stopped"),
    (CaptureHealth(True, False, 0.01), False, False, "processing thread stopped"),
    (CaptureHealth(True, True, 7.0), True, False, "processing 7.0 s behind the kernel"),
    (CaptureHealth(True, True, 31.0), False, False, "processing 31.0 s behind the kernel"),
])
def test_health_follows_the_capture_threads_and_their_lag(capture, live, ready, says):
    health = Health(stale_after_s=30, ready_max_lag_s=5, capture=lambda: capture)
    health.set_ready(True)
    assert health.live is live and health.ready is ready
    assert says in health.readiness()[1]
    server = MetricsServer(("127.0.0.1", 0), DaemonMetrics(), health).start()
    try:
        base = "http://{}:{}".format(*server.address)
        assert http_get(base + "/healthz")[0] == (200 if live else 503)
        status, body = http_get(base + "/readyz")
        assert status == (200 if ready else 503) and says in body
    finally:
        server.stop()


def test_losses_by_event_type_and_build_info():
    metrics = DaemonMetrics(lambda: EventCounts(100, 3, 0, 0.01, {"exec": 2, "socket_data": 1, "fork": 0}),
                            build_info={"version": "1.2.3", "python": "3.11.2", "bcc": "0.26.0", "kernel": "6.18"})
    text = metrics.exposition().decode()
    assert scrape_samples(text, "tracer_events_lost_total") == {
        (("type", "exec"),): 2, (("type", "socket_data"),): 1, (("type", "fork"),): 0}
    assert scrape_samples(text, "tracer_build_info") == {
        (("bcc", "0.26.0"), ("kernel", "6.18"), ("python", "3.11.2"), ("version", "1.2.3")): 1}


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9464", ("::1", 9464)),
    ("off", None), ("", None),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9464", "host:", ":9464", "host:99999", "host:port"])
def test_parse_address_refuses(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_failures_are_counted_by_layer_and_cause():
    metrics = DaemonMetrics()
    metrics.observe(traces("failed-starts"))
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    counted = {(s.labels["layer"], s.labels["cause"]): s.value
               for s in families["tracer_pod_start_failures"].samples if s.name.endswith("_total")}
    assert counted[("cni", "cni_failed")] == 1
    assert counted[("container", "oom_killed")] == 1
    assert counted[("container", "application_error")] == 2  # the crash loop's two attempts
    assert counted[("runc", "sysctl_failed")] == 1  # a sandbox's own start
    assert sum(counted.values()) == 11  # each case once, the crash loop twice


def test_build_info_names_bcc_without_importing_it():
    """bcc must be imported only after tracefs is mounted (it picks its
    tracefs path at import), so the daemon's build info reads its version file."""
    import subprocess
    import sys

    program = ("import sys; from tracer.app.daemon import build_info; info = build_info(); "
               "print(info['bcc'], info['version'], 'bcc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout.split()
    assert out[2] == "False" and out[0] not in ("", "unknown") and out[1] != "unknown"
