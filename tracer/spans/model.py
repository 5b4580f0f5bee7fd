"""The span model every exporter takes: a Trace of Spans, wall-clock times.

Built by tracer.spans.build from a pod's processes and CRI calls; written by
the exporters (console, Jaeger JSON, OTLP, SVG).  Each layer is its own
service so that Jaeger colours them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVICE_TRACER = "tracer"
SERVICE_CONTAINERD = "containerd"
SERVICE_SHIM = "containerd-shim-runc-v2"
SERVICE_RUNC = "runc"
SERVICE_CNI = "cni"
SERVICE_CONTAINER = "container"


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
    name: str
    spans: list[Span]
    resource: dict[str, object]       # host-level attributes, same for all services

    @property
    def root(self) -> Span:
        return self.spans[0]
