"""OTLP export against real OTLP receivers (gRPC and HTTP/protobuf), no BPF.

The traces come from replaying committed real captures; every field that
reaches the receiver is compared with our own spans.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from otlp_receiver import GrpcReceiver, HttpReceiver, ReceivedSpan, decode_attributes

from exporters.otlp import (
    DEFAULT_SERVICE_NAME,
    PROTOCOL_GRPC,
    PROTOCOL_HTTP,
    OtlpConfig,
    OtlpExporter,
    attribute_value,
    resolve_endpoint,
    resolve_protocol,
)
from tracer.pipeline.pipeline import replay
from tracer.spans.model import SCHEMA_URL, SERVICE_TRACER, Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECEIVERS = {PROTOCOL_GRPC: GrpcReceiver, PROTOCOL_HTTP: HttpReceiver}
STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}
KINDS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3}


def fixture_traces(name: str) -> list[Trace]:
    return replay(str(FIXTURES / f"{name}.rec")).traces()


def export_and_receive(protocol: str, traces: list[Trace], environ: dict | None = None,
                       **options) -> list[ReceivedSpan]:
    expected = sum(len(t.spans) for t in traces)
    with RECEIVERS[protocol]() as receiver:
        config = OtlpConfig.from_env(environ or {}, protocol=protocol, endpoint=receiver.endpoint, **options)
        exporter = OtlpExporter(config)
        result = exporter.export(traces)
        assert result.ok and result.exported == len(traces)
        assert exporter.shutdown(timeout_s=10)
        assert exporter.stats.sent == expected
        return receiver.received.wait_for(lambda spans: len(spans) >= expected)


@pytest.fixture(params=[PROTOCOL_GRPC, PROTOCOL_HTTP])
def protocol(request) -> str:
    return request.param


def test_every_span_reaches_the_receiver_as_we_built_it(protocol):
    traces = fixture_traces("one-pod")
    received = {s.span_id: s for s in export_and_receive(protocol, traces)}
    ours = traces[0].spans
    assert set(received) == {s.span_id for s in ours}
    for span in ours:
        got = received[span.span_id]
        assert got.trace_id == span.trace_id == traces[0].trace_id
        assert got.parent_id == span.parent_id
        assert got.name == span.name
        assert (got.span.start_time_unix_nano, got.span.end_time_unix_nano) == (span.start_ns, span.end_ns)
        assert got.span.kind == KINDS[span.kind]
        assert got.attributes == {k: attribute_value(v) for k, v in span.attributes.items()}
        assert [(e.name, e.time_unix_nano, decode_attributes(e.attributes)) for e in got.span.events] == \
            [(e.name, e.time_ns, e.attributes) for e in span.events]
        assert got.span.status.code == STATUS_CODES[span.status]
        assert got.scope_name == "tracer"
        # each layer is its own service; the tracer's root span is "tracer"
        assert got.service == (DEFAULT_SERVICE_NAME if span.service == SERVICE_TRACER else span.service)
        assert got.resource["k8s.node.name"] == "fixture-node"
        assert got.resource["host.name"] == "fixture-node"


def test_pod_identity_and_layers_as_a_backend_sees_them(protocol):
    traces = fixture_traces("one-pod")
    spans = export_and_receive(protocol, traces)
    root = next(s for s in spans if s.parent_id is None)
    assert root.name == "pod start"
    # the pod's identity on the resource of every span, as a Collector's
    # k8sattributes processor and resource-based routing look for it
    for span in spans:
        assert span.resource["k8s.pod.uid"] == "00000000-0000-4000-8000-000000000001"
        assert span.resource["k8s.pod.name"] == "web"
        assert span.resource["k8s.namespace.name"] == "shop"
        assert span.resource["k8s.node.name"] == "fixture-node"
        assert "k8s.pod.name" not in span.attributes
        # the tracer's own process is not an instance of kubelet or containerd
        assert "service.instance.id" not in span.resource
    # the root is kubelet's (the CRI client's) once its calls were seen
    assert {s.service for s in spans} == {"kubelet", "containerd", "containerd-shim-runc-v2", "runc", "cni",
                                          "container"}
    by_name = {s.name: s for s in spans}
    assert by_name["shim start"].service == "containerd-shim-runc-v2"
    assert by_name["runc:[2:INIT]"].service == "runc"
    assert by_name["exec /bin/sleep"].service == "container"
    # list attributes arrive as OTLP arrays
    sandbox = next(s for s in spans if s.name == "containerd sandbox")
    assert isinstance(sandbox.attributes["tracer.net.addresses"], tuple)
    assert by_name["exec /bin/sleep"].attributes["process.command_args"] == ("sleep", "3600")


def test_resources_and_scope_carry_the_semantic_conventions_schema(protocol):
    traces = fixture_traces("one-pod")
    with RECEIVERS[protocol]() as receiver:
        exporter = OtlpExporter(OtlpConfig.from_env({}, protocol=protocol, endpoint=receiver.endpoint))
        exporter.export(traces)
        exporter.shutdown(timeout_s=10)
        requests = receiver.received.requests
    resource_spans = [rs for request in requests for rs in request.resource_spans]
    assert resource_spans and all(rs.schema_url == SCHEMA_URL for rs in resource_spans)
    assert all(ss.schema_url == SCHEMA_URL for rs in resource_spans for ss in rs.scope_spans)
    assert SCHEMA_URL == "https://opentelemetry.io/schemas/1.37.0"


def test_one_resource_per_layer_in_each_request(protocol):
    traces = fixture_traces("one-pod")
    with RECEIVERS[protocol]() as receiver:
        exporter = OtlpExporter(OtlpConfig.from_env({}, protocol=protocol, endpoint=receiver.endpoint))
        exporter.export(traces)
        exporter.shutdown(timeout_s=10)
        requests = receiver.received.requests
    assert len(requests) == 1
    services = [decode_attributes(rs.resource.attributes)["service.name"] for rs in requests[0].resource_spans]
    assert sorted(services) == sorted(set(services))


def test_error_status_and_message_reach_the_backend(protocol):
    traces = fixture_traces("exiting-pod")
    spans = {s.span_id: s for s in export_and_receive(protocol, traces)}
    failed = next(s for s in spans.values() if s.name == "exec /bin/sh")
    assert failed.span.status.code == STATUS_CODES["ERROR"]
    assert failed.span.status.message == "exited with 3"
    assert failed.attributes["process.exit.code"] == 3
    create = next(s for s in spans.values() if s.name == "runc create"
                  and s.attributes["container.id"] == failed.attributes["container.id"])
    assert create.span.status.code == STATUS_CODES["UNSET"]


def test_resource_environment_is_honoured(protocol):
    environ = {
        "OTEL_SERVICE_NAME": "pod-start-tracer",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name=test-cluster,deployment.environment=ci,"
                                    "service.name=overridden,k8s.node.name=not-this-one",
    }
    # Resource.create reads the process environment.
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environ.items():
            patch.setenv(key, value)
        traces = fixture_traces("one-pod")
        # a trace without CRI traffic has the tracer's own root span
        traces[0].spans[0].service = "tracer"
        spans = export_and_receive(protocol, traces, environ)
    for span in spans:
        assert span.resource["k8s.cluster.name"] == "test-cluster"
        assert span.resource["deployment.environment"] == "ci"
        assert span.resource["k8s.node.name"] == "fixture-node"  # the trace's own node wins
        expected = "pod-start-tracer" if span.parent_id is None else None
        if expected:
            assert span.service == expected
        else:
            assert span.service in {"kubelet", "containerd", "containerd-shim-runc-v2", "runc", "cni", "container"}


def test_re_export_keeps_the_ids(protocol):
    traces = fixture_traces("one-pod")
    first = export_and_receive(protocol, traces)
    again = export_and_receive(protocol, fixture_traces("one-pod"))
    assert sorted((s.trace_id, s.span_id) for s in first) == sorted((s.trace_id, s.span_id) for s in again)


def test_backend_down_then_up(protocol):
    """Down: export() returns at once, the queue holds what fits, the rest is
    dropped and counted.  Up: what was queued and what comes later arrives."""
    ten = fixture_traces("ten-pods")
    one = fixture_traces("one-pod")
    receiver = RECEIVERS[protocol]()  # not started: nothing listens on its port
    n = len(ten[0].spans)  # every pod start here has the same spans
    assert all(len(t.spans) == n for t in ten + one)
    queue = 2 * n + 4  # spans: two traces fit, a third does not
    # The worker sends only when asked (flush) or when a whole batch (the
    # whole queue) is waiting, so what is queued when is deterministic.
    config = OtlpConfig.from_env({}, protocol=protocol, endpoint=receiver.endpoint, timeout_s=5.0,
                                 max_queue_size=queue, max_export_batch_size=queue, schedule_delay_ms=60_000)
    exporter = OtlpExporter(config)
    try:
        started = time.monotonic()
        result = exporter.export(ten)
        assert time.monotonic() - started < 0.5  # never waits for the network
        assert (result.exported, result.failed) == (2, 8)
        assert "queue full" in result.detail
        assert exporter.export(one).failed == 1
        stats = exporter.stats
        assert (stats.submitted, stats.queued, stats.dropped, stats.dropped_traces) == (11 * n, 2 * n, 9 * n, 9)

        # The worker now tries the dead backend (and retries); callers do not wait for it.
        started = time.monotonic()
        assert exporter.flush(timeout_s=0.3) is False
        assert time.monotonic() - started < 1.0
        stats = exporter.stats
        assert (stats.queued, stats.sending, stats.sent) == (0, 2 * n, 0)
        assert exporter.export(one).ok  # the queue has room again
        assert exporter.stats.queued == n

        receiver.start()
        assert exporter.flush(timeout_s=15)
        wanted = {ten[0].trace_id, ten[1].trace_id, one[0].trace_id}
        spans = receiver.received.wait_for(lambda spans: {s.trace_id for s in spans} >= wanted)
        assert {s.trace_id for s in spans} == wanted
        got = {s.span_id for s in spans if s.trace_id == one[0].trace_id}
        assert got == {s.span_id for s in one[0].spans}
        assert exporter.shutdown(timeout_s=10)
        stats = exporter.stats
        assert (stats.submitted, stats.sent, stats.failed, stats.dropped) == (12 * n, 3 * n, 0, 9 * n)
        assert stats.queued == stats.sending == 0
    finally:
        exporter.shutdown(timeout_s=1)
        receiver.stop()


def test_shutdown_with_the_backend_down_is_bounded(protocol):
    receiver = RECEIVERS[protocol]()  # never started
    config = OtlpConfig.from_env({}, protocol=protocol, endpoint=receiver.endpoint, timeout_s=30.0,
                                 schedule_delay_ms=50)
    exporter = OtlpExporter(config)
    exporter.export(fixture_traces("ten-pods"))
    started = time.monotonic()
    exporter.shutdown(timeout_s=1.0)
    assert time.monotonic() - started < 3.0
    stats = exporter.stats
    assert stats.sent == 0
    assert stats.failed + stats.queued + stats.sending == sum(len(t.spans) for t in fixture_traces("ten-pods"))


def test_export_after_shutdown_is_dropped_and_counted():
    exporter = OtlpExporter(OtlpConfig.from_env({}, protocol=PROTOCOL_HTTP, endpoint="http://127.0.0.1:9"))
    exporter.shutdown(timeout_s=1)
    result = exporter.export(fixture_traces("one-pod"))
    assert (result.exported, result.failed) == (0, 1)
    assert exporter.stats.dropped == len(fixture_traces("one-pod")[0].spans)


# ---- configuration (pure) ---------------------------------------------------

@pytest.mark.parametrize("protocol, option, environ, expected", [
    ("grpc", None, {}, "http://localhost:4317"),
    ("http/protobuf", None, {}, "http://localhost:4318/v1/traces"),
    ("grpc", None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}, "http://jaeger:4317"),
    ("http/protobuf", None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, "http://jaeger:4318/v1/traces"),
    ("http/protobuf", None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw/otlp/"}, "https://gw/otlp/v1/traces"),
    ("http/protobuf", None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom",
                             "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"}, "http://c:4318/custom"),
    ("http/protobuf", "http://opt:4318", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env/x"},
     "http://opt:4318/v1/traces"),
    ("grpc", "jaeger:4317", {}, "http://jaeger:4317"),
])
def test_endpoint_resolution(protocol, option, environ, expected):
    assert resolve_endpoint(protocol, option, environ) == expected


@pytest.mark.parametrize("option, environ, expected", [
    (None, {}, "http/protobuf"),
    (None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
    (None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
     "http/protobuf"),
    ("grpc", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "grpc"),
])
def test_protocol_resolution(option, environ, expected):
    assert resolve_protocol(option, environ) == expected


def test_unsupported_protocol_is_refused():
    with pytest.raises(ValueError, match="http/json"):
        resolve_protocol(None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_config_reads_the_service_name():
    assert OtlpConfig.from_env({"OTEL_SERVICE_NAME": "x"}).service_name == "x"
    assert OtlpConfig.from_env({}).service_name == "tracer"
    assert OtlpConfig.from_env({"OTEL_SERVICE_NAME": "x"}, service_name="y").service_name == "y"


@pytest.mark.parametrize("value, expected", [
    ("s", "s"), (3, 3), (True, True), (1.5, 1.5),
    (["a", "b"], ("a", "b")), ([1, 2], (1, 2)), ([1, "a"], ("1", "a")), ([], ()),
    ({"k": "v"}, "{'k': 'v'}"), (None, ""), ([{"k": 1}], ("{'k': 1}",)),
])
def test_attribute_values_become_otlp_types(value, expected):
    assert attribute_value(value) == expected


def test_replay_exports_a_recording_over_otlp(protocol):
    from click.testing import CliRunner

    from tracer.app.cli import main

    with RECEIVERS[protocol]() as receiver:
        result = CliRunner().invoke(main, ["replay", str(FIXTURES / "one-pod.rec"), "--quiet", "--otlp",
                                           "--otlp-protocol", protocol, "--otlp-endpoint", receiver.endpoint],
                                    env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None})
        assert result.exit_code == 0, result.output
        assert f"{len(fixture_traces('one-pod')[0].spans)} span(s) sent, 0 failed, 0 dropped" in result.output
        spans = receiver.received.spans()
    assert {s.span_id for s in spans} == {s.span_id for s in fixture_traces("one-pod")[0].spans}


def test_replay_fails_when_the_backend_is_down():
    from click.testing import CliRunner

    from tracer.app.cli import main

    receiver = HttpReceiver()  # never started
    result = CliRunner().invoke(main, ["replay", str(FIXTURES / "one-pod.rec"), "--quiet", "--otlp",
                                       "--otlp-protocol", "http/protobuf", "--otlp-endpoint", receiver.endpoint,
                                       "--otlp-timeout", "0.5"],
                                env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None})
    assert result.exit_code == 1
    assert "not every span reached the OTLP backend" in result.output
