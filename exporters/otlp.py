"""OTLP export through opentelemetry-sdk: gRPC or HTTP/protobuf, batched.

How our traces become OTLP
--------------------------
A pod-start trace is finished before it is exported: every span already has
its wall-clock start and end (tracer.spans.build turned kernel time into wall
time), its deterministic trace and span ids, and its layer as
`Span.service`.  So there is no live span to start and end, and we build
the SDK's own finished-span type, `ReadableSpan`, directly — the object that
`SpanProcessor.on_end` receives from the SDK's tracer — with:

- `SpanContext(trace_id, span_id)` from our hex ids (sampled), and the
  parent's `SpanContext` from `parent_id`: the ids reach the backend as they
  are, so a re-export of the same pod start never duplicates it;
- `start_time`/`end_time` = our wall-clock nanoseconds, unchanged;
- `resource` = one `Resource` per pod and layer: `service.name` is the
  span's `Span.service` (kubelet, containerd, containerd-shim-runc-v2, runc,
  cni, container; a root with no CRI call seen takes OTEL_SERVICE_NAME,
  default "tracer"), merged over the trace's resource (the pod's identity:
  k8s.pod.uid, k8s.pod.name, k8s.namespace.name, and k8s.node.name,
  host.name), OTEL_RESOURCE_ATTRIBUTES and the SDK's telemetry.sdk.*
  attributes, with the `schema_url` of the semantic conventions the spans
  follow (`tracer.spans.model.SCHEMA_URL`), as has the instrumentation
  scope.  A Collector's `k8sattributes` processor and resource-based
  routing key on these.  The OTLP encoder groups spans by equal resources,
  so each (pod, layer) is one ResourceSpans.

The alternative — one TracerProvider per layer sharing a processor, starting
spans with explicit `start_time` — cannot take explicit span ids without an
IdGenerator that is fed "the next id" behind the tracer's back, which relies
on the order in which the SDK calls it.  Building ReadableSpans needs no
such trick; the SDK's docstring discourages constructing them by hand, so
tests/unit/test_otlp_export.py checks every field against a real OTLP
receiver and would catch a change of the SDK.

Batching and back pressure
--------------------------
Spans go to the SDK's `BatchSpanProcessor` (its own worker thread, a bounded
queue) and from there to the SDK's `OTLPSpanExporter` (gRPC or HTTP), which
retries a failing backend until its timeout.  `export()` never blocks and
never waits for the network.  The SDK's queue drops silently when full, so
we admit spans in front of it: a trace whose spans do not fit into what is
left of `max_queue_size` is dropped whole (a partial pod start would
mislead) and counted.  Because we admit no more than the processor's queue
holds, its own silent drop never happens, and every span ends up counted as
sent, failed (the backend refused or stayed down past the timeout) or
dropped (queue full), see `OtlpStats`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlparse

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from exporters.base import ExportResult
from tracer.format import redact_url
from tracer.spans.model import SCHEMA_URL, SERVICE_TRACER, Span, Trace

log = logging.getLogger(__name__)

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP = "http/protobuf"
PROTOCOLS = (PROTOCOL_GRPC, PROTOCOL_HTTP)

# The environment variables of the OTLP exporter specification that we read
# ourselves (the SDK exporters also read headers, certificates, compression).
ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"  # read by the SDK's Resource.create

DEFAULT_PROTOCOL = PROTOCOL_HTTP  # the specification's default
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "v1/traces"
DEFAULT_SERVICE_NAME = SERVICE_TRACER

_KINDS = {"INTERNAL": SpanKind.INTERNAL, "CLIENT": SpanKind.CLIENT, "SERVER": SpanKind.SERVER,
          "PRODUCER": SpanKind.PRODUCER, "CONSUMER": SpanKind.CONSUMER}
_STATUS = {"UNSET": StatusCode.UNSET, "OK": StatusCode.OK, "ERROR": StatusCode.ERROR}


def _version() -> str | None:
    try:
        return version("tracer")
    except PackageNotFoundError:
        return None


_SCOPE = InstrumentationScope("tracer", _version(), schema_url=SCHEMA_URL)


def resolve_endpoint(protocol: str, endpoint: str | None = None,
                     environ: Mapping[str, str] | None = None) -> str:
    """The URL to send traces to, as the OTLP exporter specification says.

    `endpoint` (our option) and OTEL_EXPORTER_OTLP_ENDPOINT are base URLs:
    for HTTP, "v1/traces" is appended to their path.  OTEL_EXPORTER_OTLP_
    TRACES_ENDPOINT is used as it is.  For gRPC only scheme, host and port
    matter (http:// means plaintext).
    """
    environ = os.environ if environ is None else environ
    if protocol not in PROTOCOLS:
        raise ValueError(f"unsupported OTLP protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
    if not endpoint and environ.get(ENV_TRACES_ENDPOINT):
        return environ[ENV_TRACES_ENDPOINT]
    base = endpoint or environ.get(ENV_ENDPOINT) or (
        DEFAULT_GRPC_ENDPOINT if protocol == PROTOCOL_GRPC else DEFAULT_HTTP_ENDPOINT)
    if "://" not in base:
        base = f"http://{base}"
    if protocol == PROTOCOL_GRPC:
        return base
    return base.rstrip("/") + "/" + TRACES_PATH


def resolve_protocol(protocol: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    value = protocol or environ.get(ENV_TRACES_PROTOCOL) or environ.get(ENV_PROTOCOL) or DEFAULT_PROTOCOL
    if value not in PROTOCOLS:
        raise ValueError(f"unsupported OTLP protocol {value!r} (use {' or '.join(PROTOCOLS)})")
    return value


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str                      # resolved: see resolve_endpoint
    protocol: str = DEFAULT_PROTOCOL
    service_name: str = DEFAULT_SERVICE_NAME  # service.name of the tracer's own (root) spans
    timeout_s: float = 10.0            # per export, retries included
    max_queue_size: int = 2048         # spans
    max_export_batch_size: int = 512
    schedule_delay_ms: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, protocol: str | None = None,
                 endpoint: str | None = None, service_name: str | None = None, **options) -> OtlpConfig:
        environ = os.environ if environ is None else environ
        protocol = resolve_protocol(protocol, environ)
        return cls(endpoint=resolve_endpoint(protocol, endpoint, environ), protocol=protocol,
                   service_name=service_name or environ.get(ENV_SERVICE_NAME) or DEFAULT_SERVICE_NAME, **options)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unsupported OTLP protocol {self.protocol!r}")
        if not 1 <= self.max_export_batch_size <= self.max_queue_size:
            raise ValueError("max_export_batch_size must be between 1 and max_queue_size")
        if urlparse(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"OTLP endpoint must be an http:// or https:// URL, not {redact_url(self.endpoint)!r}")


def make_span_exporter(config: OtlpConfig) -> SpanExporter:
    """The SDK's OTLP span exporter for the configured protocol."""
    if config.protocol == PROTOCOL_GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.endpoint, timeout=config.timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=config.endpoint, timeout=config.timeout_s)


# ---- our spans as the SDK's spans (pure) ------------------------------------

def attribute_value(value: object):
    """An OTLP attribute value: str, bool, int, float or a homogeneous tuple of them."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        items = tuple(attribute_value(v) for v in value)
        kinds = {type(v) for v in items}
        if len(kinds) <= 1 and not (kinds & {tuple}):
            return items
        return tuple(str(v) for v in items)
    if value is None:
        return ""
    return str(value)


def attributes(values: Mapping[str, object]) -> dict[str, object]:
    return {key: attribute_value(value) for key, value in values.items()}


class ServiceResources:
    """The Resource of each (trace, layer service).

    The base comes from the SDK's Resource.create once, so
    OTEL_RESOURCE_ATTRIBUTES (and telemetry.sdk.*) are included; the trace's
    resource (the pod's and node's identity) and the layer's service.name
    take precedence.  Built per trace (a daemon sees pods without end: no
    cache that grows with them)."""

    def __init__(self, tracer_service_name: str = DEFAULT_SERVICE_NAME):
        self.tracer_service_name = tracer_service_name
        base = Resource.create({})
        # the SDK gives its process a random service.instance.id: not an
        # instance of kubelet, containerd or runc, whose spans these are
        kept = {k: v for k, v in base.attributes.items()
                if k != "service.instance.id" or k in os.environ.get(ENV_RESOURCE_ATTRIBUTES, "")}
        self._base = Resource(kept, base.schema_url)

    def service_name(self, service: str) -> str:
        return self.tracer_service_name if service == SERVICE_TRACER else service

    def get(self, service: str, trace_resource: Mapping[str, object]) -> Resource:
        return self._base.merge(Resource({**attributes(trace_resource), SERVICE_NAME: self.service_name(service)},
                                         SCHEMA_URL))

    def for_trace(self, trace: Trace) -> dict[str, Resource]:
        return {service: self.get(service, trace.resource) for service in {span.service for span in trace.spans}}


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))


def readable_span(span: Span, resource: Resource) -> ReadableSpan:
    return ReadableSpan(
        name=span.name,
        context=_context(span.trace_id, span.span_id),
        parent=_context(span.trace_id, span.parent_id) if span.parent_id else None,
        resource=resource,
        attributes=attributes(span.attributes),
        events=tuple(Event(e.name, attributes(e.attributes), e.time_ns) for e in span.events),
        links=tuple(Link(_context(link.trace_id, link.span_id), attributes(link.attributes)) for link in span.links),
        kind=_KINDS.get(span.kind, SpanKind.INTERNAL),
        status=Status(_STATUS.get(span.status, StatusCode.UNSET),
                      span.status_message if span.status == "ERROR" and span.status_message else None),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=_SCOPE,
    )


def readable_spans(trace: Trace, resources: ServiceResources) -> list[ReadableSpan]:
    by_service = resources.for_trace(trace)
    return [readable_span(span, by_service[span.service]) for span in trace.spans]


# ---- the exporter ------------------------------------------------------------

@dataclass(frozen=True)
class OtlpStats:
    """Span counts since start; submitted = queued + sent + failed + dropped."""

    submitted: int = 0       # spans of the traces given to export()
    queued: int = 0          # admitted, not yet handed to the network exporter
    sending: int = 0         # handed to the network exporter, no answer yet
    sent: int = 0            # the backend accepted them
    failed: int = 0          # the backend refused them, or stayed down past the timeout
    dropped: int = 0         # the queue was full: never sent
    dropped_traces: int = 0


class _CountingExporter(SpanExporter):
    """Between the batch processor and the network exporter: counts outcomes."""

    def __init__(self, inner: SpanExporter, owner: OtlpExporter):
        self.inner = inner
        self.owner = owner
        self._shut = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.owner._handed(len(spans))
        try:
            result = self.inner.export(spans)
        except Exception:  # the SDK exporters do not raise, but a failure must still be counted
            log.exception("OTLP export raised")
            result = SpanExportResult.FAILURE
        self.owner._answered(len(spans), result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        with self._lock:
            if self._shut:
                return
            self._shut = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class OtlpExporter:
    """The TraceExporter for OTLP: non-blocking, bounded, counted.

    `export()` returns at once: ExportResult.exported is the number of traces
    admitted to the queue, .failed the number dropped because it was full.
    What became of them later is in `stats`.
    """

    def __init__(self, config: OtlpConfig, span_exporter: SpanExporter | None = None):
        self.config = config
        self.resources = ServiceResources(config.service_name)
        self._lock = threading.Lock()
        self._submitted = self._outstanding = self._sending = 0
        self._sent = self._failed = self._dropped = self._dropped_traces = 0
        self._network = _CountingExporter(span_exporter or make_span_exporter(config), self)
        self._processor = BatchSpanProcessor(
            self._network, max_queue_size=config.max_queue_size,
            schedule_delay_millis=config.schedule_delay_ms,
            max_export_batch_size=config.max_export_batch_size,
            export_timeout_millis=config.timeout_s * 1000)
        self._closed = False

    # called from the processor's worker thread through _CountingExporter
    def _handed(self, count: int) -> None:
        with self._lock:
            self._outstanding -= count
            self._sending += count

    def _answered(self, count: int, ok: bool) -> None:
        with self._lock:
            self._sending -= count
            if ok:
                self._sent += count
            else:
                self._failed += count

    @property
    def stats(self) -> OtlpStats:
        with self._lock:
            return OtlpStats(self._submitted, self._outstanding, self._sending, self._sent, self._failed,
                             self._dropped, self._dropped_traces)

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        admitted = dropped = 0
        for trace in traces:
            spans = readable_spans(trace, self.resources)
            with self._lock:
                self._submitted += len(spans)
                fits = not self._closed and self._outstanding + len(spans) <= self.config.max_queue_size
                if fits:
                    self._outstanding += len(spans)
                else:
                    self._dropped += len(spans)
                    self._dropped_traces += 1
            if not fits:
                dropped += 1
                continue
            for span in spans:
                self._processor.on_end(span)
            admitted += 1
        detail = f"OTLP queue full ({self.config.max_queue_size} spans): dropped {dropped} trace(s)" if dropped else ""
        return ExportResult(admitted, dropped, detail)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Sends what is queued now; False if that took longer than timeout_s."""
        worker = threading.Thread(target=self._processor.force_flush, name="otlp-flush", daemon=True)
        worker.start()
        worker.join(timeout_s)
        return not worker.is_alive()

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Sends what is queued and stops, within about timeout_s.

        When the backend is slow or down, the network exporter is shut down at
        the deadline, which aborts its retries: what is left counts as failed.
        Returns whether everything was sent (or failed) in time.
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True

        def close() -> None:
            self._processor.force_flush()
            self._processor.shutdown()

        worker = threading.Thread(target=close, name="otlp-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            log.warning("OTLP backend %s did not take the last spans within %.1f s; giving up",
                        self.config.endpoint, timeout_s)
            self._network.shutdown()
            worker.join(1.0)
        return not worker.is_alive()
