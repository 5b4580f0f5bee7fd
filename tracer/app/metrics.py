"""Prometheus metrics and health endpoints of the daemon.

One small HTTP server (loopback by default) serves:

- ``/metrics``: pod-start durations per layer (histograms), the capture's
  event and lost-event counters, what the capture and the CRI decoder
  dropped (``tracer_dropped_total{stage,reason}`` and friends), the size of
  every internal table (they must stay flat), its own memory and CPU
  (``process_*``), and what became of the exported spans;
- ``/healthz``: 200 while the daemon's loop, the capture's drain and
  processing threads turn and processing keeps within 30 s of the kernel;
- ``/readyz``: 200 once the BPF programs are attached, until shutdown,
  while live and processing keeps within 5 s of the kernel (`Health`);
- ``tracer_build_info{version,python,bcc,kernel}``: 1.

A scrape reads what the capture published (tracer.app.session.Recorder
publishes its counters every half second); it never takes the capture's
lock.  The server (tracer.app.serve) is one thread with bounded
connections and a deadline per connection.

Layer durations come from the spans of each exported trace, in the layers
of the critical path (see `layer_durations`), so they show exactly what the
traces show.  Counters owned by other parts (the pipeline's event counts,
the OTLP exporter's span counts) are read when Prometheus scrapes, not
copied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from exporters.status import pod_status
from tracer.app.serve import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_S, ServerStats, SmallHttpServer
from tracer.spans.critical_path import LAYER_PROCESS, LAYERS, span_layers
from tracer.spans.model import Trace

# Pod-start steps take from a millisecond (runc start) to minutes (an image pull).
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def layer_durations(trace: Trace) -> list[tuple[str, float]]:
    """(layer, seconds) for every span that begins a stretch of its layer.

    The layers are those of the critical path (`tracer.spans.critical_path.span_layers`).
    A span counts when its parent is in another layer, so that each layer's
    work is observed once, at its outermost span: kubelet's CRI calls (CLIENT),
    containerd's handling of them (SERVER; the `containerd sandbox|container`
    span when no call was seen), each CNI plugin, `shim start`, `runc create`,
    `runc init`, `runc start` and the container process (`exec …`: exec to
    exit when it exited within the start, zero while it runs).  The root
    (the whole pod start) does not count, so its children always do.
    """
    layers = span_layers(trace)
    result = []
    for span in trace.spans[1:]:
        layer = layers[span.span_id]
        if span.parent_id == trace.root.span_id or layers.get(span.parent_id) != layer:
            # a container process still running when the start ended counts zero
            running = layer == LAYER_PROCESS and span.attributes.get("tracer.process.exited") is not True
            result.append((layer, 0.0 if running else max(0, span.end_ns - span.start_ns) / 1e9))
    return result



@dataclass(frozen=True)
class EventCounts:
    events: int
    lost: int
    decode_errors: int
    lag_seconds: float = 0.0   # how far event processing is behind the kernel
    lost_by_type: dict[str, int] | None = None  # event type name -> lost (every known type, zeros too)


@dataclass(frozen=True)
class SpanCounts:
    queued: int
    sent: int
    failed: int
    dropped: int


@dataclass(frozen=True)
class PipelineCounts:
    """What the capture and the decoders dropped or gave up on, and how many
    entries the tracer's tables hold (tracer.app.session.Recorder.counts)."""

    kernel: dict[str, int]          # the BPF programs' counters (tracer.kernel.capture.STAT_NAMES), by name
    cri: dict[str, int]             # tracer.cri.calls.CriStats
    cri_decoder: dict[str, object]  # tracer.cri.wire.DecoderStats.as_dict()
    endpoints_reaped: int           # CRI endpoints closed without close(2), found and forgotten
    tables: dict[str, int]          # table name -> entries
    syscall_programs: str = ""      # the mode (tracer.kernel.modes): on-demand or always
    hooks: dict[str, float] = field(default_factory=dict)  # tracer.kernel.capture.Capture.hook_figures(), on demand


# (stage, reason) of tracer_dropped_total, from the counters that hold them
_CRI_SOCKET_DROPS = {"data_without_endpoint": "no_endpoint", "segments_out_of_order": "segment_out_of_order",
                     "recorded_calls_rejected": "recorded_call_rejected"}


class _Sources(Collector):
    """Counters read at scrape time from the parts that own them."""

    def __init__(self, metrics: DaemonMetrics):
        self.metrics = metrics

    def describe(self):
        return []  # names are checked by collect(); these families vary with the sources

    def collect(self):
        if self.metrics.build_info:
            info = GaugeMetricFamily("tracer_build_info", "The running tracer: its version, Python, bcc and "
                                     "the kernel. Always 1.", labels=sorted(self.metrics.build_info))
            info.add_metric([self.metrics.build_info[k] for k in sorted(self.metrics.build_info)], 1)
            yield info
        counts = self.metrics.pipeline_source() if self.metrics.pipeline_source else None
        if counts is not None:
            yield from _pipeline_families(counts)
        events = self.metrics.event_source() if self.metrics.event_source else None
        if events is not None:
            yield CounterMetricFamily("tracer_events", "Kernel events received from the BPF programs.",
                                      value=events.events)
            if events.lost_by_type is None:
                yield CounterMetricFamily("tracer_events_lost", "Kernel events lost (ring buffer full).",
                                          value=events.lost)
            else:
                lost = CounterMetricFamily("tracer_events_lost", "Kernel events lost (ring buffer full), by "
                                           "event type.", labels=["type"])
                for event_type, value in sorted(events.lost_by_type.items()):
                    lost.add_metric([event_type], value)
                yield lost
            yield CounterMetricFamily("tracer_events_undecodable", "Kernel events that could not be decoded.",
                                      value=events.decode_errors)
            yield GaugeMetricFamily("tracer_capture_lag_seconds",
                                    "How far event processing is behind the kernel (a drain interval when it keeps up).",
                                    value=events.lag_seconds)
        spans = self.metrics.span_source() if self.metrics.span_source else None
        if spans is not None:
            yield CounterMetricFamily("tracer_spans_exported", "Spans the OTLP backend accepted.",
                                      value=spans.sent)
            dropped = CounterMetricFamily("tracer_spans_dropped", "Spans never delivered, by reason.",
                                          labels=["reason"])
            dropped.add_metric(["queue_full"], spans.dropped)
            dropped.add_metric(["export_failed"], spans.failed)
            yield dropped
            yield GaugeMetricFamily("tracer_spans_queued", "Spans waiting to be exported.", value=spans.queued)


def _pipeline_families(counts: PipelineCounts):
    dropped = CounterMetricFamily(
        "tracer_dropped", "Things the tracer dropped or gave up on, by stage and reason (nothing is dropped "
        "uncounted; see docs/hardening.md).", labels=["stage", "reason"])
    for reason, value in sorted(counts.kernel.items()):
        dropped.add_metric(["kernel", reason], value)
    for field_name, reason in _CRI_SOCKET_DROPS.items():
        dropped.add_metric(["cri_socket", reason], counts.cri.get(field_name, 0))
    for reason, value in sorted(dict(counts.cri_decoder.get("errors") or {}).items()):
        dropped.add_metric(["cri_decoder", reason], value)
    yield dropped
    decoder = counts.cri_decoder
    cri_bytes = CounterMetricFamily("tracer_cri_bytes", "Bytes on CRI sockets: copied by the kernel (captured), "
                                    "moved by a syscall but not copied (not_copied), copied but not decoded "
                                    "(not_decoded).", labels=["outcome"])
    cri_bytes.add_metric(["captured"], decoder.get("bytes", 0))
    cri_bytes.add_metric(["not_copied"], decoder.get("lost_bytes", 0))
    cri_bytes.add_metric(["not_decoded"], decoder.get("dropped_bytes", 0))
    yield cri_bytes
    calls = CounterMetricFamily("tracer_cri_calls", "CRI call views decoded, by how the method was known.",
                                labels=["resolution"])
    by_resolution = {how: decoder.get(f"calls_{how}", 0) for how in ("learned", "inferred", "unresolved")}
    calls.add_metric(["decoded"], max(0, decoder.get("calls", 0) - sum(by_resolution.values())))
    for how, value in by_resolution.items():
        calls.add_metric([how], value)
    yield calls
    yield CounterMetricFamily("tracer_cri_entries_learned", "HPACK entries from before a late attach learned "
                              "from calls proven beyond doubt (docs/cri.md).", value=decoder.get("entries_learned", 0))
    yield CounterMetricFamily("tracer_cri_calls_incomplete", "CRI call views with bytes missing or cut short "
                              "(their spans say tracer.cri.incomplete).", value=decoder.get("calls_incomplete", 0))
    yield CounterMetricFamily("tracer_cri_connections_abandoned", "CRI connections whose bytes the decoder "
                              "stopped reading (no frame boundary within its budget).",
                              value=decoder.get("endpoints_abandoned", 0))
    yield CounterMetricFamily("tracer_cri_endpoints_reaped", "CRI socket ends closed without close(2) (process "
                              "exit, exec), found and forgotten.", value=counts.endpoints_reaped)
    if counts.syscall_programs:
        mode = GaugeMetricFamily("tracer_syscall_programs_mode", "How the syscall programs are attached "
                                 "(on-demand: only while the runtime works; always: the fallback).", labels=["mode"])
        mode.add_metric([counts.syscall_programs], 1)
        yield mode
    hooks = counts.hooks
    if hooks:
        yield GaugeMetricFamily("tracer_syscall_program_attached", "1 while the syscall program is attached "
                                "(a runtime worker lives).", value=hooks.get("attached", 0))
        yield CounterMetricFamily("tracer_syscall_program_attaches", "Times the syscall program was attached.",
                                  value=hooks.get("attaches", 0))
        yield CounterMetricFamily("tracer_syscall_program_attached_seconds", "Time the syscall program was "
                                  "attached (every syscall on the node is slower then).",
                                  value=hooks.get("attached_seconds", 0))
        yield CounterMetricFamily("tracer_syscall_program_forced_detaches", "Detaches while a worker still lived "
                                  "(stuck): its trace is partial.", value=hooks.get("forced_detaches", 0))
        yield CounterMetricFamily("tracer_armer_restarts", "The armer died and was started again.",
                                  value=hooks.get("armer_restarts", 0))
        yield GaugeMetricFamily("tracer_syscall_program_attach_latency_max_seconds", "Longest time from a request "
                                "(a worker's birth, a shim's exec, a pod-changing CRI request) to the syscall "
                                "program attached.",
                                value=hooks.get("attach_latency_max_seconds", 0))
    entries = GaugeMetricFamily("tracer_table_entries", "Entries in each internal table (userspace, and the "
                                "BPF maps as bpf_*).", labels=["table"])
    for table, size in sorted(counts.tables.items()):
        entries.add_metric([table], size)
    yield entries


class DaemonMetrics:
    """The daemon's Prometheus registry (its own, so tests can make several)."""

    def __init__(self, event_source: Callable[[], EventCounts | None] | None = None,
                 span_source: Callable[[], SpanCounts | None] | None = None,
                 pipeline_source: Callable[[], PipelineCounts | None] | None = None,
                 build_info: dict[str, str] | None = None):
        self.build_info = dict(build_info or {})
        self.event_source = event_source
        self.span_source = span_source
        self.pipeline_source = pipeline_source
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, …
        self.layer_seconds = Histogram(
            "tracer_pod_start_layer_duration_seconds",
            "Time spent in each layer of a pod start (one observation per outermost span of that layer).",
            ["layer"], buckets=BUCKETS_S, registry=self.registry)
        self.pod_seconds = Histogram("tracer_pod_start_duration_seconds",
                                     "Whole pod start, from the first runtime step to the last container running.",
                                     buckets=BUCKETS_S, registry=self.registry)
        self.pod_starts = Counter("tracer_pod_starts", "Pod-start traces exported, by outcome.", ["status"],
                                  registry=self.registry)
        # error.type is a closed set of codes (tracer/spans/diagnosis.py): bounded labels
        self.pod_failures = Counter("tracer_pod_start_failures",
                                    "Failed pod starts (and restarts), by the layer and cause the diagnosis names.",
                                    ["layer", "cause"], registry=self.registry)
        for layer in LAYERS:
            self.layer_seconds.labels(layer=layer)
        for status in ("ok", "error", "partial"):
            self.pod_starts.labels(status=status)
        self.registry.register(_Sources(self))

    def observe(self, traces: Iterable[Trace]) -> None:
        for trace in traces:
            self.pod_starts.labels(status=pod_status(trace)).inc()
            root = trace.root.attributes
            if trace.root.status == "ERROR" and "error.type" in root:
                self.pod_failures.labels(layer=str(root.get("tracer.failed_layer", "")),
                                         cause=str(root["error.type"])).inc()
            self.pod_seconds.observe(max(0, trace.root.end_ns - trace.root.start_ns) / 1e9)
            for layer, seconds in layer_durations(trace):
                self.layer_seconds.labels(layer=layer).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class CaptureHealth:
    """What the capture's threads are doing, read without their lock
    (tracer.app.session.Recorder.health)."""

    drain_alive: bool      # the thread that empties the ring buffer
    process_alive: bool    # the thread that turns events into pod starts
    lag_seconds: float     # how far processing is behind the kernel


class Health:
    """Liveness and readiness of the daemon, for /healthz and /readyz.

    Live: the daemon's loop beat within `stale_after_s`, and, once the
    capture runs, its drain and processing threads are alive and processing
    is less than `stale_after_s` behind the kernel (a thread that hangs
    stops the lag from advancing, so it grows).  Ready: BPF attached and not
    stopping, live, and processing less than `ready_max_lag_s` behind.
    """

    def __init__(self, stale_after_s: float = 30.0, ready_max_lag_s: float = 5.0,
                 capture: Callable[[], CaptureHealth | None] | None = None):
        self.stale_after_s = stale_after_s
        self.ready_max_lag_s = ready_max_lag_s
        self.capture = capture
        self._ready = False
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        self._last_beat = time.monotonic()  # one float: no lock needed

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def liveness(self) -> tuple[bool, str]:
        """(live, why) in one line."""
        since = time.monotonic() - self._last_beat
        problems = [f"daemon loop silent for {since:.1f} s"] if since >= self.stale_after_s else []
        capture = self.capture() if self.capture is not None else None
        if capture is not None:
            problems += [f"{name} thread stopped" for name, alive in
                         (("drain", capture.drain_alive), ("processing", capture.process_alive)) if not alive]
            if capture.lag_seconds >= self.stale_after_s:
                problems.append(f"processing {capture.lag_seconds:.1f} s behind the kernel")
        if problems:
            return False, "; ".join(problems)
        lag = f", capture lag {capture.lag_seconds:.3f} s" if capture is not None else ""
        return True, f"ok{lag}"

    def readiness(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "not ready (BPF not attached yet, or stopping)"
        live, why = self.liveness()
        if not live:
            return False, why
        capture = self.capture() if self.capture is not None else None
        if capture is not None and capture.lag_seconds >= self.ready_max_lag_s:
            return False, f"processing {capture.lag_seconds:.1f} s behind the kernel"
        return True, "ready" + why.removeprefix("ok")

    @property
    def live(self) -> bool:
        return self.liveness()[0]

    @property
    def ready(self) -> bool:
        return self.readiness()[0]


def parse_address(text: str) -> tuple[str, int] | None:
    """"HOST:PORT" ("[::1]:9464" for IPv6) to (host, port); "" or "off" → None."""
    text = text.strip()
    if text.lower() in ("", "off", "none"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, number


class MetricsServer:
    """/metrics, /healthz and /readyz over HTTP, in one thread
    (tracer.app.serve: bounded connections, a deadline each)."""

    def __init__(self, address: tuple[str, int], metrics: DaemonMetrics, health: Health, *,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.metrics = metrics
        self.health = health
        self._server = SmallHttpServer(address, self._handle, max_connections=max_connections,
                                       timeout_s=timeout_s)

    def _handle(self, path: str) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        if path == "/metrics":
            return 200, self.metrics.exposition(), CONTENT_TYPE_LATEST
        if path in ("/healthz", "/readyz"):
            ok, why = self.health.liveness() if path == "/healthz" else self.health.readiness()
            return (200 if ok else 503), f"{why}\n".encode(), text
        return 404, b"not found\n", text

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def start(self) -> MetricsServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


def scrape_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric from an exposition text: {sorted labels: value} (for tests and tools)."""
    from prometheus_client.parser import text_string_to_metric_families

    result: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                result[tuple(sorted(sample.labels.items()))] = sample.value
    return result


def layer_counts(text: str) -> dict[str, float]:
    """Observations per layer in an exposition text."""
    samples = scrape_samples(text, "tracer_pod_start_layer_duration_seconds_count")
    return {dict(labels)["layer"]: value for labels, value in samples.items()}


__all__ = [
    "LAYERS",
    "CaptureHealth",
    "DaemonMetrics",
    "EventCounts",
    "Health",
    "MetricsServer",
    "PipelineCounts",
    "SpanCounts",
    "layer_counts",
    "layer_durations",
    "parse_address",
    "pod_status",
    "scrape_samples",
]
