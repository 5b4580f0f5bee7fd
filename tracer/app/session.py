"""A live recording: capture → pipeline (→ raw recording) until stopped."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tracer.enrich.enricher import Enricher
from tracer.format import Clock
from tracer.kernel.capture import Capture, CaptureConfig
from tracer.kernel.procfs import same_process
from tracer.kernel.sockets import socket_inodes_of
from tracer.pipeline.pipeline import Arrival, Pipeline, recording_meta, stats_record
from tracer.pipeline.recording import RecordingWriter, RecordKind
from tracer.redaction import DEFAULT_REDACTION, ArgvRedaction
from tracer.spans.model import Trace

log = logging.getLogger("tracer.app.session")

LOSS_CHECK_INTERVAL_S = 0.1
# Bytes of records taken off the ring buffer and waiting, decoded, for the
# processing thread (half the default ring buffer; decoded, they take a few
# times that): at this much the drain waits, the ring buffer fills, and the
# kernel counts what it cannot take (never an unbounded queue, never a
# silent drop).
MAX_HANDOFF_BYTES = 16 << 20
# How often CRI endpoints are checked for a holder that died with them open
# (see Recorder._reap_endpoints) ...
REAP_INTERVAL_S = 1.0
# ... and how often, in its fd table, for a holder that lives on without them
# (closed at exec by O_CLOEXEC); then too the kernel's maps are counted, and
# rid of endpoints userspace never heard of whose socket is gone.
FD_CHECK_INTERVAL_S = 5.0
# How often the processing thread publishes its counters for readers that
# must not take its lock (the daemon's /metrics).
PUBLISH_INTERVAL_S = 0.5


@dataclass(frozen=True)
class RecordConfig:
    raw_path: Path | None = None
    node_name: str = field(default_factory=socket.gethostname)
    capture: CaptureConfig = CaptureConfig()
    argv_redaction: ArgvRedaction = DEFAULT_REDACTION  # what is hidden of command lines


@dataclass
class LiveStatus:
    events: int
    lost: int
    decode_errors: int
    pods_seen: int


@dataclass(frozen=True)
class Published:
    """The counters as the processing thread last published them (`Recorder.published`)."""

    status: LiveStatus
    counts: object  # tracer.app.metrics.PipelineCounts
    lost_by_type: dict[int, int]
    at: float  # time.monotonic() of publication


class Handoff:
    """Batches of arrived records from the drain thread to the processing
    thread, bounded by the bytes of their records."""

    def __init__(self, limit_bytes: int = MAX_HANDOFF_BYTES):
        self.limit_bytes = limit_bytes
        self._ready = threading.Condition()
        self._batches: deque[tuple[list[Arrival], int]] = deque()
        self._records = 0
        self._bytes = 0
        self._closed = False

    def __len__(self) -> int:
        return self._records

    def put(self, arrivals: list[Arrival], drained_through_ns: int) -> None:
        """Queues a batch (also an empty one: time moves on), waiting while
        the queue is full."""
        size = sum(len(arrival.raw) for arrival in arrivals)
        with self._ready:
            while self._bytes >= self.limit_bytes and not self._closed:
                self._ready.wait(0.1)
            self._batches.append((arrivals, drained_through_ns))
            self._records += len(arrivals)
            self._bytes += size
            self._ready.notify_all()

    def take(self) -> tuple[list[Arrival], int] | None:
        """Every batch queued, as one (waits for one); None once closed and
        empty.  The time is that of the last batch's drain."""
        with self._ready:
            while not self._batches and not self._closed:
                self._ready.wait()
            if not self._batches:
                return None
            arrivals: list[Arrival] = []
            drained_through_ns = 0
            while self._batches:
                batch, drained_through_ns = self._batches.popleft()
                arrivals += batch
            self._records = self._bytes = 0
            self._ready.notify_all()
            return arrivals, drained_through_ns

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class Recorder:
    """Two threads: one drains the ring buffer, decodes and reads the files
    that cannot wait (Pipeline.arrive); the other does everything else, so
    that a burst that keeps it busy delays neither the drain nor the bundle
    reads."""

    def __init__(self, config: RecordConfig, capture: Capture | None = None):
        """`capture`: one made beforehand (of config.capture), e.g. to have
        begun loading its programs while the caller was still importing."""
        self.config = config
        self.clock = Clock.measure()
        self._writer = RecordingWriter(config.raw_path) if config.raw_path else None
        self.pipeline = Pipeline(self.clock, config.node_name, Enricher(), self._writer,
                                 argv_redaction=config.argv_redaction)
        self.capture = capture if capture is not None else Capture(config.capture)
        self.capture.on_batch = self._on_batch
        self._stop = threading.Event()
        self._drain_thread: threading.Thread | None = None
        self._process_thread: threading.Thread | None = None
        self._handoff = Handoff()
        # every event the kernel stamped before this has been processed (the
        # start of the drain whose batch was processed last)
        self._processed_through_ns = 0
        self._lock = threading.Lock()
        self._last_loss_check = 0.0
        self._last_reap = 0.0
        self._last_fd_check = time.monotonic()
        self._reap_candidates: set[int] = set()  # missing from their holder's fds at the last check
        self._reaped: set[int] = set()  # endpoints closed here, until the pipeline drops them
        self.started_at = 0.0
        self.stop_requested_at = 0.0
        self.stopped_at = 0.0
        self._published: Published | None = None
        self._last_publish = 0.0

    def start(self) -> None:
        snapshot = self.capture.start()
        if self._writer is not None:
            self._writer.write_json(RecordKind.META, recording_meta(self.clock, self.config.node_name, {
                "kernel": os.uname().release, "started_wall_ns": time.time_ns(),
                "attach_seconds": self.capture.stats.attach_seconds,
            }))
        with self._lock:
            for raw in snapshot:
                self.pipeline.add_kernel_bytes(raw)
            self._publish(time.monotonic())
        self.started_at = time.monotonic()
        self._process_thread = threading.Thread(target=self._process_loop, name="tracer-process", daemon=True)
        self._process_thread.start()
        self._drain_thread = threading.Thread(target=self.capture.run, args=(self._stop,), name="tracer-drain",
                                              daemon=True)
        self._drain_thread.start()

    def _on_batch(self, batch: list[bytes]) -> None:
        """In the drain thread."""
        arrivals = [arrival for raw in batch if (arrival := self.pipeline.arrive(raw)) is not None]
        self._handoff.put(arrivals, self.capture.drain_began_ns)

    def _process_loop(self) -> None:
        while (taken := self._handoff.take()) is not None:
            try:
                self._process(*taken)
            except Exception:  # a bug must not stop tracing: say so, go on with the next batch
                log.exception("processing a batch of %d events failed", len(taken[0]))

    def _process(self, arrivals: list[Arrival], drained_through_ns: int) -> None:
        with self._lock:
            for arrival in arrivals:
                self.pipeline.add_arrival(arrival)
            self._processed_through_ns = drained_through_ns
            self.pipeline.flush()
            now = time.monotonic()
            if now - self._last_loss_check >= LOSS_CHECK_INTERVAL_S:
                self._last_loss_check = now
                self.pipeline.note_lost(self.capture.new_losses(), time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            if now - self._last_reap >= REAP_INTERVAL_S:
                self._last_reap = now
                if self.capture.restart_armer_if_dead():
                    log.error("the armer (which attaches the syscall program while the runtime works) had died; "
                              "started again (workers alive meanwhile have partial traces)")
                self.capture.read_kernel_stats()  # the kernel side's drop counters, for the metrics
                check_fds = now - self._last_fd_check >= FD_CHECK_INTERVAL_S
                self._reap_endpoints(check_fds)
                if check_fds:
                    self._last_fd_check = now
                    self.capture.forget_stale_endpoints(set(self.pipeline.cri.endpoints))
                    self.capture.count_kernel_tables()
            if now - self._last_publish >= PUBLISH_INTERVAL_S:
                self._publish(now)

    def _publish(self, now: float) -> None:
        """Under the lock: a copy of the counters for lock-free readers."""
        self._last_publish = now
        self._published = Published(self._status(), self._counts(), dict(self.capture.stats.lost_by_type), now)

    def published(self) -> Published | None:
        """The counters as last published (at most PUBLISH_INTERVAL_S old
        while the capture runs, final after stop), without the lock: a
        reader here never delays the processing thread."""
        return self._published

    def health(self):
        """The capture threads' state, without the lock (for /healthz)."""
        from tracer.app.metrics import CaptureHealth

        def alive(thread: threading.Thread | None) -> bool:
            return thread is not None and (thread.is_alive() or self._stop.is_set())

        return CaptureHealth(drain_alive=alive(self._drain_thread), process_alive=alive(self._process_thread),
                             lag_seconds=self.lag_seconds())

    def _reap_endpoints(self, check_fds: bool) -> None:
        """Closes the CRI endpoints whose socket the kernel closed without a
        close(2) for the BPF program to see: at the exit of a process that
        dies with it open (a client that exits without closing, a runtime
        that crashes), or at exec (O_CLOEXEC).  Every short-lived CRI client
        (crictl, a health check) would otherwise leave its end in the
        kernel's map, which has room for 16384, and in the CRI layer, for
        ever.  The pipeline closes the endpoints of traced processes at
        their exit; kubelet is not in the runtime's process tree, so its
        clients' ends are closed here: in the pipeline through a recorded
        SOCKET_CLOSE event, and in the kernel's maps.

        An endpoint goes when its holder (the process that opened it) is
        gone (its start time no longer matches the pid's), or, with
        `check_fds`, when the living holder lacked it at two fd checks in a
        row: a close(2) still in the reorder window is never taken for one.
        A socket handed to another process is forgotten too; its I/O was not
        traced anyway (only its holder is in cri_tgids).
        """
        endpoints = self.pipeline.cri.endpoints
        self._reaped &= set(endpoints)  # a close sent earlier may still wait in the reorder window
        candidates = [e for e in endpoints.values() if e.inode not in self._reaped]
        gone = [e for e in candidates if e.start_ns and not same_process(e.pid, e.start_ns)]
        if check_fds:
            gone_inodes = {e.inode for e in gone}
            by_pid: dict[int, list] = {}
            for endpoint in candidates:
                if endpoint.inode not in gone_inodes:
                    by_pid.setdefault(endpoint.pid, []).append(endpoint)
            missing = []
            for pid, held_before in by_pid.items():
                held = socket_inodes_of(pid)
                if held is None:  # its fd table is not readable: leave its endpoints alone
                    continue
                missing += [e for e in held_before if e.inode not in held]
            confirmed = [e for e in missing if e.inode in self._reap_candidates]
            self._reap_candidates = {e.inode for e in missing} - {e.inode for e in confirmed}
            gone += confirmed
        if not gone:
            return
        self._reaped |= {e.inode for e in gone}
        closes = self.capture.forget_endpoints(
            [(e.inode, e.peer_inode, e.side, e.pid, e.comm) for e in gone], time.clock_gettime_ns(time.CLOCK_MONOTONIC))
        for raw in closes:
            self.pipeline.add_kernel_bytes(raw)

    def counts(self):
        """What was dropped, and how full every table is, in userspace and in
        the kernel's maps (`bpf_*`, counted every FD_CHECK_INTERVAL_S): in a
        daemon they must stay flat over months (for the metrics)."""
        with self._lock:
            return self._counts()

    def _counts(self):
        from tracer.app.metrics import PipelineCounts

        pipeline, capture = self.pipeline, self.capture.stats
        tables = {**pipeline.table_sizes(), "handoff_events": len(self._handoff),
                  **{f"bpf_{name}": n for name, n in capture.kernel_tables.items()}}
        return PipelineCounts(kernel=dict(capture.kernel_stats), cri=dataclasses.asdict(pipeline.cri.stats),
                              cri_decoder=pipeline.cri.decoder.stats.as_dict(),
                              endpoints_reaped=capture.endpoints_reaped, tables=tables,
                              syscall_programs=self.capture.mode.mode.value if self.capture.mode else "",
                              hooks={**self.capture.hook_figures(), "armer_restarts": capture.armer_restarts})

    def status(self) -> LiveStatus:
        with self._lock:
            return self._status()

    def _status(self) -> LiveStatus:
        stats = self.pipeline.stats
        sandboxes = sum(1 for a in self.pipeline.assembler.containers.values() if a.is_sandbox)
        return LiveStatus(stats.events + self.pipeline.pending_events, stats.lost, stats.decode_errors, sandboxes)

    def take_finished(self, quiet_ns: int, max_age_ns: int) -> list[Trace]:
        """Traces of the pod starts that are over, each once (daemon mode).

        See PodAssembler.take_finished for "over".  Events wait in the
        pipeline's reorder window until newer events push them out; here the
        clock moves the window instead, so that the last events of a start
        on a node that then goes quiet are not left out of its trace.
        """
        with self._lock:
            # Up to when every event is in the pipeline: when it falls
            # behind (a burst, a busy node), a start whose last events still
            # wait in the ring buffer must not look quiet.
            now = self.horizon_ns()
            self.pipeline.flush(now_ktime_ns=now)
            return self.pipeline.take_finished_traces(now, quiet_ns, max_age_ns)

    def horizon_ns(self) -> int:
        """The kernel time up to which the pipeline has every event: the
        start of the drain whose batch was processed last, once one was."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        processed = self._processed_through_ns
        return min(now, processed) if processed and not self._stop.is_set() else now

    def lag_seconds(self) -> float:
        """How far the pipeline is behind the kernel (0 while it keeps up,
        to a drain interval)."""
        return (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.horizon_ns()) / 1e9

    def stop_capture(self) -> None:
        """Stops the capture thread and processes every event left, but keeps
        the BPF programs attached (detaching takes seconds); `stop` detaches.
        Lets the daemon export the last pod starts before detaching."""
        self.stop_requested_at = time.monotonic()
        self._stop.set()
        self.capture.interrupt()
        if self._drain_thread is not None:
            self._drain_thread.join()  # its last drain is queued
        self._handoff.close()
        if self._process_thread is not None:
            self._process_thread.join()
        self.stopped_at = time.monotonic()
        with self._lock:
            self.pipeline.note_lost(self.capture.new_losses(), time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self.capture.read_kernel_stats()
            self.pipeline.flush(everything=True)
            self._publish(time.monotonic())

    def stop(self, build: bool = True, detach: bool = True) -> list[Trace]:
        """Stops capturing, processes what is left and builds the traces
        (all of them; none with build=False, e.g. when take_finished hands
        them out).  With detach=False the caller detaches later (`detach`),
        once it has written its output: detaching takes seconds."""
        self.stop_capture()
        with self._lock:
            traces = self.pipeline.traces() if build else []
            if self._writer is not None:
                capture = self.capture.stats
                self._writer.write_json(RecordKind.STATS, {
                    **stats_record(self.pipeline), "kernel_counters": dict(capture.kernel_stats),
                    "endpoints_reaped": capture.endpoints_reaped, "kernel_tables": dict(capture.kernel_tables),
                    "oversized_records": self._writer.oversized_records})
                self._writer.close()
                self._writer = None
        if detach:
            self.detach()
        return traces

    def detach(self) -> None:
        self.capture.close()
