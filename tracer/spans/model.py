"""The span model every exporter takes: a Trace of Spans, wall-clock times.

Built by tracer.spans.build from a pod's processes and CRI calls; written by
the exporters (console, Jaeger JSON, OTLP, SVG).  Each layer is its own
service so that Jaeger colours them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The OpenTelemetry semantic conventions the spans follow (every name and
# attribute in docs/span-model.md, with the convention it comes from).
# 1.37.0: the first with `container.runtime.name`; the last whose RPC
# attributes (`rpc.system`, `rpc.service`, `rpc.method`,
# `rpc.grpc.status_code`) are those kubelet's own gRPC spans carry.
SEMCONV_VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

SERVICE_TRACER = "tracer"
SERVICE_CONTAINERD = "containerd"
SERVICE_SHIM = "containerd-shim-runc-v2"
SERVICE_RUNC = "runc"
SERVICE_CNI = "cni"
SERVICE_CONTAINER = "container"


SHORT_ID = 12  # the characters of a container id people are shown


def pod_title(namespace: str | None, name: str | None, sandbox_id: str) -> str:
    """A trace's title for people (titles, reports): "pod <namespace>/<name>"."""
    return f"pod {namespace or '?'}/{name or sandbox_id[:SHORT_ID]}"


@dataclass
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class SpanLink:
    """A span of another trace this one follows (a restart's previous attempt)."""

    trace_id: str
    span_id: str
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start_ns: int                     # wall clock
    end_ns: int
    kind: str = "INTERNAL"            # INTERNAL, CLIENT or SERVER
    attributes: dict[str, object] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    status: str = "UNSET"             # UNSET, OK or ERROR
    status_message: str = ""
    links: list[SpanLink] = field(default_factory=list)


@dataclass
class Trace:
    trace_id: str
    name: str                         # for people (titles, reports): "pod <namespace>/<name>"
    spans: list[Span]
    # the pod's and node's identity (k8s.pod.uid, k8s.pod.name,
    # k8s.namespace.name, k8s.node.name, host.name): the resource of every
    # service of the trace, each with its own service.name
    resource: dict[str, object]

    @property
    def root(self) -> Span:
        return self.spans[0]
