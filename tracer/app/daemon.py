"""`tracer daemon`: trace every pod start on the node, continuously, to OTLP.

Three threads matter:

- the capture thread (tracer.app.session.Recorder) drains the ring buffer into
  the pipeline, under the recorder's lock;
- the daemon loop (the caller's thread) wakes every `poll_interval_s`, takes
  the pod starts that are over (`Recorder.take_finished`: quiet for
  `quiet_s`, or older than `max_age_s`) under that lock, and hands the
  traces to the exporters outside it;
- the OTLP exporter's batch worker sends them.  Its queue is bounded and
  never blocks the loop (exporters.otlp), so a slow or absent backend
  costs dropped spans, counted, and never stalls event intake.

SIGTERM (or SIGINT, or the end of `duration_s`) stops the capture, exports
every pod start not yet exported, flushes the queue within
`shutdown_timeout_s` (while the BPF programs detach, which takes seconds)
and returns 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from exporters.base import TraceExporter
from exporters.console import ConsoleExporter
from exporters.otlp import ENV_RESOURCE_ATTRIBUTES, OtlpConfig, OtlpExporter
from tracer.app.metrics import (
    CaptureHealth,
    DaemonMetrics,
    EventCounts,
    Health,
    MetricsServer,
    PipelineCounts,
    SpanCounts,
)
from tracer.events import EVENT_TYPES, EventType
from tracer.format import redact_url
from tracer.kernel.capture import CaptureConfig
from tracer.kernel.preflight import CannotTrace, require_tracing
from tracer.redaction import DEFAULT_REDACTION, ArgvRedaction
from tracer.spans.model import Trace

log = logging.getLogger("tracer.app.daemon")

DEFAULT_METRICS_ADDRESS = ("127.0.0.1", 9464)
EXIT_OK = 0
EXIT_ATTACH_FAILED = 1
EXIT_CANNOT_TRACE = 1  # tracer.kernel.preflight found that tracing cannot work here (the log says why)


@dataclass(frozen=True)
class DaemonConfig:
    node_name: str
    otlp: OtlpConfig | None               # None: no OTLP export (console only)
    quiet_s: float = 2.0                  # a pod start is over after this long without activity
    max_age_s: float = 300.0              # … or this long after it began (then marked partial)
    poll_interval_s: float = 0.2
    duration_s: float | None = None       # stop after this long (tests); None: until SIGTERM
    metrics_address: tuple[str, int] | None = DEFAULT_METRICS_ADDRESS
    shutdown_timeout_s: float = 5.0
    console: bool = False                 # also print each trace's waterfall on stdout
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    argv_redaction: ArgvRedaction = DEFAULT_REDACTION  # what is hidden of command lines

    def __post_init__(self) -> None:
        if self.quiet_s <= 0 or self.max_age_s < self.quiet_s:
            raise ValueError("need 0 < quiet_s <= max_age_s")
        if self.poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")

    def describe(self) -> dict:
        """The effective configuration, for the start-up log line (no credentials)."""
        described = dataclasses.asdict(self)
        described["argv_redaction"] = self.argv_redaction.describe()
        if described.get("otlp"):
            described["otlp"]["endpoint"] = redact_url(described["otlp"]["endpoint"])
        described["resource_attributes_env"] = os.environ.get(ENV_RESOURCE_ATTRIBUTES, "")
        return described


def build_info() -> dict[str, str]:
    """Labels of tracer_build_info: what is running.  bcc's version is read
    from its version.py, without importing bcc (which must come after
    tracefs is mounted, tracer.kernel.headers)."""
    import importlib.util
    import platform
    import re
    from importlib import metadata
    from pathlib import Path

    try:
        version = metadata.version("tracer")
    except metadata.PackageNotFoundError:
        version = "unknown"
    bcc_version = "none"
    spec = importlib.util.find_spec("bcc")
    if spec is not None and spec.origin:
        try:
            text = Path(spec.origin).with_name("version.py").read_text()
            match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
            bcc_version = match.group(1) if match else "unknown"
        except OSError:
            bcc_version = "unknown"
    return {"version": version, "python": platform.python_version(), "bcc": bcc_version,
            "kernel": platform.release()}


class Daemon:
    """The daemon loop; `run(stop)` returns an exit code."""

    def __init__(self, config: DaemonConfig, exporters: Sequence[TraceExporter] | None = None):
        self.config = config
        self.otlp: OtlpExporter | None = None
        if exporters is None:
            built: list[TraceExporter] = []
            if config.otlp is not None:
                self.otlp = OtlpExporter(config.otlp)
                built.append(self.otlp)
            if config.console:
                built.append(ConsoleExporter())
            exporters = built
        self.exporters = list(exporters)
        self.recorder = None
        self.health = Health(stale_after_s=max(30.0, 20 * config.poll_interval_s), capture=self._capture_health)
        self.metrics = DaemonMetrics(self._event_counts, self._span_counts, self._pipeline_counts,
                                     build_info=build_info())
        self.server: MetricsServer | None = None
        self.exported_traces = 0

    # ---- metric sources (scrape time) --------------------------------------

    # Each reads what the capture last published, never the capture's lock:
    # a scrape must not hold up the processing of events.

    def _event_counts(self) -> EventCounts | None:
        published = self.recorder.published() if self.recorder is not None else None
        if published is None:
            return None
        status = published.status
        lost_by_type = {event_type.name.lower(): 0 for event_type in EventType}
        for value, lost in published.lost_by_type.items():
            name = EVENT_TYPES[value].name.lower() if value in EVENT_TYPES else f"type_{value}"
            lost_by_type[name] = lost_by_type.get(name, 0) + lost
        return EventCounts(status.events, status.lost, status.decode_errors, self.recorder.lag_seconds(),
                           lost_by_type)

    def _pipeline_counts(self) -> PipelineCounts | None:
        published = self.recorder.published() if self.recorder is not None else None
        return published.counts if published is not None else None

    def _capture_health(self) -> CaptureHealth | None:
        return self.recorder.health() if self.recorder is not None and self.recorder.started_at else None

    def _span_counts(self) -> SpanCounts | None:
        if self.otlp is None:
            return None
        stats = self.otlp.stats
        return SpanCounts(queued=stats.queued + stats.sending, sent=stats.sent, failed=stats.failed,
                          dropped=stats.dropped)

    # ---- the loop ------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        from tracer.app.session import RecordConfig, Recorder

        config = self.config
        log.info("starting with %s", json.dumps(config.describe(), default=str, sort_keys=True))
        try:
            checked = require_tracing()
        except CannotTrace as error:  # nothing started yet: no port bound, no BPF loaded
            log.error("%s", error)
            self._close_exporters()
            return EXIT_CANNOT_TRACE
        for warning in checked.warnings:
            log.warning("%s", warning)
        if config.metrics_address is not None:
            try:
                self.server = MetricsServer(config.metrics_address, self.metrics, self.health).start()
            except OSError as error:  # the port is taken, or the address is not this host's
                log.error("cannot serve metrics on %s:%d: %s (--metrics-address)", *config.metrics_address, error)
                self._close_exporters()
                return EXIT_ATTACH_FAILED
            log.info("metrics and health on http://%s:%d (/metrics /healthz /readyz)", *self.server.address)
        try:
            self.recorder = Recorder(RecordConfig(raw_path=None, node_name=config.node_name,
                                                  capture=config.capture, argv_redaction=config.argv_redaction))
            self.recorder.start()
        except Exception as error:  # a BPF or permission failure: report it and exit non-zero
            log.error("cannot start tracing: %s", error)
            self._close_exporters()
            self._stop_server()
            return EXIT_ATTACH_FAILED
        stats = self.recorder.capture.stats
        log.info("tracing (BPF attached in %.2f s, %d runtime processes already running); syscall programs %s%s",
                 stats.attach_seconds, stats.seeded_processes, self.recorder.capture.mode.describe(),
                 f"; the armer at {stats.armer_priority}" if stats.armer_priority else "")
        self.health.set_ready(True)

        quiet_ns = int(config.quiet_s * 1e9)
        max_age_ns = int(config.max_age_s * 1e9)
        deadline = time.monotonic() + config.duration_s if config.duration_s else None
        try:
            while not stop.wait(config.poll_interval_s):
                self.health.beat()
                self._export(self.recorder.take_finished(quiet_ns, max_age_ns))
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            self.health.set_ready(False)
            log.info("stopping")
            self.recorder.stop_capture()
            # Whatever is left.  Not marked partial for want of a quiet period
            # (most just started); a start really cut short lacks steps, and
            # the trace builder marks those itself ("no runc start seen").
            self._export(self.recorder.take_finished(0, 0))
            # Detaching the BPF programs takes seconds: do it while the
            # exporters flush, not before.
            detach = threading.Thread(target=self.recorder.stop, kwargs={"build": False}, name="tracer-detach")
            detach.start()
            self._close_exporters()
            detach.join()
            self._stop_server()
        status = self.recorder.status()
        kernel = self.recorder.capture.stats.kernel_stats
        lost_by_type = self.recorder.pipeline.stats.kernel_lost
        log.info("stopped: %d pod start(s) exported; events %d, lost %d%s, undecodable %d%s%s",
                 self.exported_traces, status.events, status.lost,
                 f" {json.dumps(dict(lost_by_type), sort_keys=True)}" if status.lost else "", status.decode_errors,
                 self._span_summary(), f"; kernel counters {json.dumps(kernel, sort_keys=True)}" if kernel else "")
        return EXIT_OK

    def _export(self, traces: list[Trace]) -> None:
        if not traces:
            return
        for trace in traces:
            root = trace.root
            partial = f" (partial: {root.attributes.get('tracer.partial.reasons', '')})" \
                if root.attributes.get("tracer.partial") else ""
            log.info("%s: %.1f ms, %d spans, trace %s%s", trace.name, (root.end_ns - root.start_ns) / 1e6,
                     len(trace.spans), trace.trace_id, partial)
        self.metrics.observe(traces)
        self.exported_traces += len(traces)
        for exporter in self.exporters:
            try:
                result = exporter.export(traces)
            except Exception:  # an exporter must not raise; if one does, the others still run
                log.exception("%s failed", type(exporter).__name__)
                continue
            if not result.ok:
                log.warning("%s: %s", type(exporter).__name__, result.detail)

    def _close_exporters(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        for exporter in self.exporters:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                if isinstance(exporter, OtlpExporter):
                    exporter.shutdown(remaining)
                else:
                    exporter.shutdown()
            except Exception:
                log.exception("%s: shutdown failed", type(exporter).__name__)

    def _stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _span_summary(self) -> str:
        if self.otlp is None:
            return ""
        stats = self.otlp.stats
        return (f"; spans sent {stats.sent}, failed {stats.failed}, dropped {stats.dropped}"
                f", unsent {stats.queued + stats.sending}")


def run_daemon(config: DaemonConfig) -> int:
    """Runs until SIGTERM/SIGINT (or config.duration_s); returns the exit code."""
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return Daemon(config).run(stop)
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
