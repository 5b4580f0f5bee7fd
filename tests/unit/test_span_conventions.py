"""Pure: the spans of every committed recording follow the OpenTelemetry
semantic conventions the tracer pins (tracer.spans.model.SEMCONV_VERSION),
as a Collector, Tempo's metrics generator and span-metrics expect them:
known attribute keys only, low-cardinality span names, the pod's identity
on the resource, gRPC names and statuses as gRPC instrumentation has them."""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from pathlib import Path

import pytest

from tracer.pipeline.pipeline import replay
from tracer.spans.model import SEMCONV_VERSION, Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCENARIOS = sorted(p.name.removesuffix(".rec") for p in FIXTURES.glob("*.rec"))

# Every key of the conventions the tracer uses, and where it is defined.
# Checked against the semantic-conventions repository at tag v1.37.0
# (model/<group>/registry.yaml: each is there, none deprecated).  Anything
# else the tracer says is under `tracer.`.
SEMCONV_KEYS = {
    # resource
    "service.name": "service", "host.name": "host", "k8s.node.name": "k8s", "k8s.pod.uid": "k8s",
    "k8s.pod.name": "k8s", "k8s.namespace.name": "k8s",
    # container spans
    "container.id": "container", "container.runtime.name": "container", "container.image.name": "container",
    "k8s.container.name": "k8s", "k8s.container.restart_count": "k8s",
    # process spans
    "process.pid": "process", "process.parent_pid": "process", "process.executable.path": "process",
    "process.command_args": "process", "process.exit.code": "process",
    # CRI spans (RPC, gRPC)
    "rpc.system": "rpc", "rpc.service": "rpc", "rpc.method": "rpc", "rpc.grpc.status_code": "rpc",
    "server.address": "server", "network.transport": "network",
    # failures
    "error.type": "error",
}
# the SDK's own resource attributes
SDK_KEYS = {"telemetry.sdk.language", "telemetry.sdk.name", "telemetry.sdk.version"}
# Every span name there is; <…> stands for a bounded set (CRI methods, CNI
# plugins, the entrypoint's path).
NAMES = re.compile(r"pod start|container start|containerd sandbox|containerd container|runtime\.v1\.\w+/\w+"
                   r"|cni [\w.-]+ ADD|shim start|shim daemon|runc create|runc init|runc start"
                   r"|runc:\[[012]:(PARENT|CHILD|INIT)\]|exec /[\w./-]*")
ID = re.compile(r"[0-9a-f]{12}")


@cache
def traces(name: str) -> tuple[Trace, ...]:
    return tuple(replay(str(FIXTURES / f"{name}.rec")).traces())


def test_the_pinned_release():
    assert SEMCONV_VERSION == "1.37.0"


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_attribute_is_a_conventions_or_the_tracers(name):
    for trace in traces(name):
        assert set(trace.resource) <= set(SEMCONV_KEYS)
        for span in trace.spans:
            keys = set(span.attributes) | {k for e in span.events for k in e.attributes} | \
                {k for link in span.links for k in link.attributes}
            unknown = {k for k in keys if not k.startswith("tracer.") and k not in SEMCONV_KEYS}
            assert not unknown, (span.name, unknown)
            # the pod's identity is the resource's, not the span's
            assert not {"k8s.pod.uid", "k8s.pod.name", "k8s.namespace.name", "k8s.node.name"} & set(span.attributes)


@pytest.mark.parametrize("name", SCENARIOS)
def test_span_names_have_no_ids_or_pod_names(name):
    for trace in traces(name):
        identity = {trace.resource.get("k8s.pod.name"), trace.resource.get("k8s.pod.uid")} - {None, ""}
        for span in trace.spans:
            assert NAMES.fullmatch(span.name), span.name
            assert not ID.search(span.name) and not any(i in span.name for i in identity), span.name
        assert trace.root.name == ("pod start" if "k8s.container.restart_count" not in trace.root.attributes
                                   else "container start")


def test_the_names_of_every_recording_are_few():
    names = {s.name for name in SCENARIOS for t in traces(name) for s in t.spans}
    assert len(names) <= 40, sorted(names)


@pytest.mark.parametrize("name", SCENARIOS)
def test_cri_spans_are_named_as_grpc_instrumentation_names_them(name):
    for trace in traces(name):
        for span in (s for s in trace.spans if s.kind in ("CLIENT", "SERVER")):
            assert span.name == f"{span.attributes['rpc.service']}/{span.attributes['rpc.method']}"
            assert span.attributes["rpc.system"] == "grpc" and span.attributes["network.transport"] == "unix"
            # the layer is the service
            assert span.service == ("kubelet" if span.kind == "CLIENT" else "containerd")


def test_command_lines_are_arrays():
    for trace in traces("one-pod"):
        for span in trace.spans:
            assert "process.command_line" not in span.attributes
            if "process.command_args" in span.attributes:
                assert isinstance(span.attributes["process.command_args"], list)


@pytest.mark.parametrize("code, server_error", [(5, False), (3, False), (9, False), (2, True), (13, True), (14, True)])
def test_a_server_span_is_error_only_for_server_errors(code, server_error):
    """gRPC's span status rules: NOT_FOUND, INVALID_ARGUMENT or
    FAILED_PRECONDITION are the client's errors (its span ERROR, the
    server's UNSET); UNKNOWN, INTERNAL, UNAVAILABLE the server's (both)."""
    pipeline = replay(str(FIXTURES / "one-pod.rec"))
    call = next(c for c in pipeline.cri.calls if c.method == "CreateContainer")
    call.client = dataclasses.replace(call.client, grpc_status=code, grpc_message="no")
    call.server = dataclasses.replace(call.server, grpc_status=code, grpc_message="no")
    (trace,) = pipeline.traces()
    spans = {s.kind: s for s in trace.spans if s.attributes.get("rpc.method") == "CreateContainer"}
    assert spans["CLIENT"].status == "ERROR"
    assert spans["SERVER"].status == ("ERROR" if server_error else "UNSET")
    assert spans["SERVER"].attributes["rpc.grpc.status_code"] == code
    # the diagnosis is where the error is; the root fails either way
    failed = spans["SERVER"] if server_error else spans["CLIENT"]
    assert failed.attributes["error.type"] == "create_container_failed"
    assert trace.root.status == "ERROR"
