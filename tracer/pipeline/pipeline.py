"""The pure path from event bytes to pod traces: decode → order → correlate.

Live recording and replay both go through Pipeline, so a recording replays
to exactly the traces the live run produced.  Live, events arrive in
batches from the ring buffer, slightly out of time order across CPUs; they
wait in a short reorder window and are then processed in kernel-time order.
Enrichment records are made (live) or read back (replay) at the same
position in that order.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from tracer.correlate.pods import PRUNE_GRACE_NS, PodAssembler, PodTrace
from tracer.correlate.records import (
    CriClientRecord,
    EnrichmentRecord,
    record_from_json,
    record_json,
)
from tracer.cri.calls import CriLayer, PairedCall, call_record, calls_for_pod, unanswered_calls
from tracer.cri.model import DecoderConfig
from tracer.enrich.enricher import Enricher
from tracer.events import (
    EVENT_TYPES,
    DecodeError,
    Event,
    EventType,
    ExitEvent,
    SocketCloseEvent,
    SocketDataEvent,
    SocketOpenEvent,
    decode,
    sanitize,
)
from tracer.format import Clock
from tracer.redaction import DEFAULT_REDACTION, ArgvRedaction
from tracer.pipeline.recording import RecordingWriter, RecordKind, read_recording
from tracer.spans.build import StartExtent, build_trace, start_extent
from tracer.spans.critical_path import critical_path_attributes
from tracer.spans.model import Trace

# Events from different CPUs can reach the ring buffer out of time order by
# a few microseconds; 50 ms covers scheduling delays with a wide margin.
REORDER_WINDOW_NS = 50_000_000
SOCKET_EVENTS = (SocketOpenEvent, SocketDataEvent, SocketCloseEvent)


@dataclass
class PipelineStats:
    events_by_type: Counter = field(default_factory=Counter)
    decode_errors: int = 0
    decode_error_samples: list[str] = field(default_factory=list)
    kernel_lost: Counter = field(default_factory=Counter)   # by event type name
    truncated_recording: bool = False

    @property
    def events(self) -> int:
        return sum(self.events_by_type.values())

    @property
    def lost(self) -> int:
        return sum(self.kernel_lost.values())

    def as_dict(self) -> dict:
        return {
            "events": self.events, "events_by_type": dict(self.events_by_type),
            "decode_errors": self.decode_errors, "decode_error_samples": list(self.decode_error_samples),
            "kernel_lost": dict(self.kernel_lost), "truncated_recording": self.truncated_recording,
        }


class Arrival(NamedTuple):
    """A record taken off the ring buffer: its (sanitized) bytes, decoded."""

    raw: bytes
    event: Event


class Pipeline:
    def __init__(self, clock: Clock, node_name: str, enricher: Enricher | None = None,
                 recording: RecordingWriter | None = None, reorder_window_ns: int = REORDER_WINDOW_NS,
                 argv_redaction: ArgvRedaction = DEFAULT_REDACTION):
        self.clock = clock
        self.node_name = node_name
        self.enricher = enricher
        self.recording = recording
        self.reorder_window_ns = reorder_window_ns
        # what is hidden of every command line, in exec events and CRI messages alike
        self.argv_redaction = argv_redaction
        self.assembler = PodAssembler()
        self.cri = CriLayer(on_call=self._store_call, evidence=self.assembler.runtime_work.prove,
                            config=DecoderConfig(argv_redaction=argv_redaction))
        self.stats = PipelineStats()
        # sandbox id → the id its pod start's trace got (it may have joined
        # kubelet's trace): its restarts link to it
        self.pod_start_trace_ids: dict[str, str] = {}
        self._pending: list[tuple[int, int, bytes, Event]] = []
        self._sequence = 0
        self._newest_ktime = 0

    @property
    def pending_events(self) -> int:
        """Events waiting in the reorder window."""
        return len(self._pending)

    # ---- input -------------------------------------------------------------

    def add_kernel_bytes(self, raw: bytes) -> None:
        """One ring-buffer record; malformed ones are counted and dropped."""
        arrival = self.arrive(raw)
        if arrival is not None:
            self.add_arrival(arrival)

    def arrive(self, raw: bytes) -> Arrival | None:
        """The part of taking a record that cannot wait: decoding it, and
        reading the files it names that may be gone in milliseconds (a runc
        bundle, its log).  Safe to call from the thread that drains the ring
        buffer while another runs add_arrival; None (counted) if malformed."""
        try:
            raw = sanitize(raw, self.argv_redaction)
            event = decode(raw)
        except DecodeError as error:
            self.stats.decode_errors += 1
            if len(self.stats.decode_error_samples) < 10:
                self.stats.decode_error_samples.append(str(error))
            return None
        if self.enricher is not None:
            self.enricher.on_arrival(event)
        return Arrival(raw, event)

    def add_arrival(self, arrival: Arrival) -> None:
        """Puts an arrived record into the reorder window."""
        ktime = arrival.event.header.ktime_ns
        self._newest_ktime = max(self._newest_ktime, ktime)
        heapq.heappush(self._pending, (ktime, self._sequence, arrival.raw, arrival.event))
        self._sequence += 1

    def note_lost(self, lost_by_type: dict[int, int], ktime_ns: int) -> None:
        """New kernel-side losses since the last call (by event type).

        Written to the recording at once, so that a recording cut short
        still says which pods lost events."""
        by_name = {(EventType(t).name if t in EventType._value2member_map_ else str(t)): n
                   for t, n in lost_by_type.items() if n}
        if not by_name:
            return
        if self.recording is not None:
            self.recording.write_json(RecordKind.STATS, {"type": "loss", "ktime_ns": ktime_ns, "lost": by_name})
        self._apply_loss(by_name, ktime_ns)

    def _apply_loss(self, by_name: dict[str, int], ktime_ns: int) -> None:
        self.stats.kernel_lost.update(by_name)
        self.assembler.note_lost(ktime_ns, sum(by_name.values()))

    def flush(self, everything: bool = False, now_ktime_ns: int = 0) -> None:
        """Processes pending events older than the reorder window (or all).

        `now_ktime_ns` lets time move the window when no events arrive."""
        horizon = max(self._newest_ktime, now_ktime_ns) - self.reorder_window_ns
        while self._pending and (everything or self._pending[0][0] <= horizon):
            _, _, raw, event = heapq.heappop(self._pending)
            self._process(raw, event)

    def _process(self, raw: bytes, event: Event) -> None:
        self.stats.events_by_type[EVENT_TYPES[event.header.type].name] += 1
        # CRI payloads are not stored: the decoded, redacted calls are (below).
        if self.recording is not None and not isinstance(event, SocketDataEvent):
            self.recording.write(RecordKind.KERNEL, raw)
        if isinstance(event, SOCKET_EVENTS):
            if isinstance(event, SocketOpenEvent) and self.enricher is not None:
                record = self.enricher.cri_client(event)
                if record is not None:
                    self.add_enrichment(record)
            self.cri.feed(event)
            return
        if isinstance(event, ExitEvent):
            self.cri.process_exited(event.header.tgid, event.header.ktime_ns)
        self.assembler.feed(event)
        if self.enricher is not None:
            proc = self.assembler.table.get(_subject_key(event))
            if proc is not None:
                owner = self.assembler.owner.get(proc.key)
                for record in self.enricher.observe(event, proc, owner):
                    self.add_enrichment(record)

    def _store_call(self, call, endpoint) -> None:
        if self.recording is not None:
            self.recording.write_json(RecordKind.ENRICHMENT, call_record(call, endpoint))

    def add_enrichment(self, record: EnrichmentRecord) -> None:
        if self.recording is not None:
            self.recording.write_json(RecordKind.ENRICHMENT, record_json(record))
        if isinstance(record, CriClientRecord):
            self.cri.set_client(record.pid, record.start_ns, record.lists_by_streaming)
        else:
            self.assembler.feed_enrichment(record)

    # ---- output ------------------------------------------------------------

    def table_sizes(self) -> dict[str, int]:
        """How many entries each of the pipeline's tables holds: they must
        stay flat in a daemon that runs for months (tests/e2e/test_soak.py)."""
        sizes = {"reorder_window": len(self._pending), "pod_start_trace_ids": len(self.pod_start_trace_ids),
                 **self.assembler.table_sizes(), **self.cri.table_sizes()}
        if self.enricher is not None:
            sizes.update(self.enricher.table_sizes())
        return sizes

    def summary(self) -> dict:
        """Every counter of the pipeline: events, losses, what was dropped."""
        return {**self.stats.as_dict(), "unowned_events": self.assembler.stats.unowned_events,
                "impostor_execs": self.assembler.stats.impostors,
                "cri": dataclasses.asdict(self.cri.stats), "cri_decoder": self.cri.decoder.stats.as_dict()}

    def pods(self) -> list[PodTrace]:
        pods = self.assembler.build()
        if self.stats.truncated_recording:
            for pod in pods:
                pod.partial_reasons.append("the recording ends in a truncated record")
        return pods

    def traces(self) -> list[Trace]:
        self.cri.finish(self._newest_ktime)
        return [self._trace(pod) for pod in self.pods()]

    def take_finished_traces(self, now_ktime_ns: int, quiet_ns: int, max_age_ns: int) -> list[Trace]:
        """Traces of pod starts that are over, each once (daemon mode)."""
        pods = self.assembler.take_finished(now_ktime_ns, quiet_ns, max_age_ns)
        traces = []
        for pod in pods:
            trace, extent = self._trace_and_extent(pod)
            traces.append(trace)
            # handed out: no other trace needs them (the pod's later calls, a
            # restart's, stay until they are in a trace or pruned)
            self.cri.forget(extent.calls)
        # what is forgotten here only grows with time, like what the
        # assembler prunes: forgotten when it prunes (when traces were handed
        # out, else once a second; the daemon asks five times a second, and on
        # a node with many pods each pass walks every call kept)
        if self.assembler.pruned_at_ns == now_ktime_ns:
            # a pod start still to be exported began at most max_age ago
            self.cri.prune(now_ktime_ns - max_age_ns - PRUNE_GRACE_NS)
            if self.enricher is not None:
                self.enricher.retain(self.assembler.containers.keys())
            for sandbox_id in self.pod_start_trace_ids.keys() - self.assembler.containers.keys():
                del self.pod_start_trace_ids[sandbox_id]  # the pod is gone
        return traces

    def _calls_for(self, pod: PodTrace) -> list[PairedCall]:
        container_ids = {c.container_id for c in pod.all_containers}
        if pod.restart is None:
            return calls_for_pod(self.cri.calls, pod.sandbox_id, container_ids, pod.uid, pod.other_container_ids)
        return calls_for_pod(self.cri.calls, "", container_ids, "")

    def _trace(self, pod: PodTrace) -> Trace:
        return self._trace_and_extent(pod)[0]

    def _trace_and_extent(self, pod: PodTrace) -> tuple[Trace, StartExtent]:
        processes = self.assembler.table.processes
        # the start's own calls: those that began before it ended
        extent = start_extent(pod, self._calls_for(pod), processes)
        # a start that the runtime never answered (it died or restarted
        # mid-call, the client gave up) is cut short, whatever else was seen
        pod.partial_reasons.extend(reason for reason in unanswered_calls(list(extent.calls))
                                   if reason not in pod.partial_reasons)
        trace = build_trace(pod, self.clock, self.node_name, processes=processes, extent=extent,
                            pod_start_trace_id=self.pod_start_trace_ids.get(pod.sandbox_id))
        if pod.restart is None:
            self.pod_start_trace_ids[pod.sandbox_id] = trace.trace_id
        trace.root.attributes.update(critical_path_attributes(trace))
        return trace, extent


def _subject_key(event: Event) -> tuple[int, int]:
    child_key = getattr(event, "child_key", None)
    return child_key if child_key is not None else event.header.process_key


def recording_meta(clock: Clock, node_name: str, extra: dict) -> dict:
    return {"type": "meta", "wall_minus_monotonic_ns": clock.wall_minus_monotonic_ns,
            "node_name": node_name, **extra}


def replay(path: str, argv_redaction: ArgvRedaction = DEFAULT_REDACTION,
           progress: Callable[[int, int], None] | None = None) -> Pipeline:
    """Rebuilds a Pipeline from a recording, without BPF or enrichment I/O.
    Its exec events go through `argv_redaction` again (a recording holds
    them as the recorder's redaction left them).  `progress(records done,
    records)` is called every few thousand records."""
    result = read_recording(path)
    meta = next((r.json() for r in result.records if r.kind is RecordKind.META), None)
    if meta is None:
        raise ValueError(f"{path}: recording has no META record")
    pipeline = Pipeline(Clock(int(meta["wall_minus_monotonic_ns"])), meta.get("node_name", ""),
                        argv_redaction=argv_redaction)
    total = len(result.records)
    for done, record in enumerate(result.records):
        if progress is not None and done % 2048 == 0:
            progress(done, total)
        if record.kind is RecordKind.KERNEL:
            pipeline.add_kernel_bytes(record.payload)
            pipeline.flush(everything=True)  # already in processing order
        elif record.kind is RecordKind.ENRICHMENT:
            enrichment = record.json()
            if enrichment.get("type") == "cri_call":
                pipeline.cri.add_recorded(enrichment)
            else:
                pipeline.add_enrichment(record_from_json(enrichment))
        elif record.kind is RecordKind.STATS:
            stats = record.json()
            if stats.get("type") == "loss":
                pipeline._apply_loss(stats["lost"], stats["ktime_ns"])
    pipeline.stats.truncated_recording = result.truncated_tail
    if progress is not None:
        progress(total, total)
    return pipeline


def stats_record(pipeline: Pipeline) -> dict:
    return {"type": "stats", **pipeline.summary()}

