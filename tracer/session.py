"""A live recording: capture → pipeline (→ raw recording) until stopped."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tracer.capture import Capture, CaptureConfig, socket_close_event
from tracer.enrich import Enricher
from tracer.events import SocketEndpoint
from tracer.format import Clock
from tracer.pipeline import Pipeline, recording_meta, stats_record
from tracer.procfs import same_process
from tracer.recording import RecordingWriter, RecordKind
from tracer.sockets import socket_inodes_of
from tracer.spans import Trace

LOSS_CHECK_INTERVAL_S = 0.1
# How often CRI endpoints are checked for having been closed without close(2)
# (see Recorder._reap_closed_endpoints); an endpoint is forgotten after two
# checks in a row found its holder without it.
REAP_INTERVAL_S = 5.0
# How often CRI endpoints are checked for a process that died with them open.
ENDPOINT_SWEEP_INTERVAL_S = 1.0


@dataclass(frozen=True)
class RecordConfig:
    raw_path: Path | None = None
    node_name: str = field(default_factory=socket.gethostname)
    capture: CaptureConfig = CaptureConfig()


@dataclass
class LiveStatus:
    events: int
    lost: int
    decode_errors: int
    pods_seen: int


class Recorder:
    """Owns the capture thread; everything else happens in that thread."""

    def __init__(self, config: RecordConfig):
        self.config = config
        self.clock = Clock.measure()
        self._writer = RecordingWriter(config.raw_path) if config.raw_path else None
        self.pipeline = Pipeline(self.clock, config.node_name, Enricher(), self._writer)
        self.capture = Capture(config.capture, self._on_batch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_loss_check = 0.0
        self._last_reap = time.monotonic()
        self._reap_candidates: set[int] = set()
        self._last_endpoint_sweep = 0.0
        self._swept: set[int] = set()  # endpoints closed by the sweep, until the pipeline drops them
        self.started_at = 0.0
        self.stop_requested_at = 0.0
        self.stopped_at = 0.0

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
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self.capture.run, args=(self._stop,), name="tracer-capture",
                                        daemon=True)
        self._thread.start()

    def _on_batch(self, batch: list[bytes]) -> None:
        with self._lock:
            for raw in batch:
                self.pipeline.add_kernel_bytes(raw)
            self.pipeline.flush()
            now = time.monotonic()
            if now - self._last_loss_check >= LOSS_CHECK_INTERVAL_S:
                self._last_loss_check = now
                self.pipeline.note_lost(self.capture.new_losses(), time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            if now - self._last_reap >= REAP_INTERVAL_S:
                self._last_reap = now
                self._reap_closed_endpoints()
                self.capture.count_kernel_tables()
            if now - self._last_endpoint_sweep >= ENDPOINT_SWEEP_INTERVAL_S:
                self._last_endpoint_sweep = now
                self._close_endpoints_of_dead_processes()

    def _reap_closed_endpoints(self) -> None:
        """Forgets CRI endpoints that their process no longer holds.

        The BPF program sees close(2), but not the sockets the kernel closes
        at exit or at exec (O_CLOEXEC): every short-lived CRI client (crictl,
        a health check) would leave its end in the kernel's map, which has
        room for 16384, and in the CRI layer, for ever.  An endpoint is
        forgotten when its holder (the process that opened it) lacked it at
        two checks in a row: a close(2) still in the reorder window is never
        taken for one.  A socket handed to another process is forgotten too;
        its I/O was not traced anyway (only its holder is in cri_tgids).
        """
        by_pid: dict[int, list] = {}
        for endpoint in self.pipeline.cri.endpoints.values():
            by_pid.setdefault(endpoint.pid, []).append(endpoint)
        gone = []
        for pid, endpoints in by_pid.items():
            held = socket_inodes_of(pid)
            if held is None:  # its fd table is not readable: leave its endpoints alone
                continue
            gone += [e for e in endpoints if e.inode not in held]
        dead = [e for e in gone if e.inode in self._reap_candidates]
        self._reap_candidates = {e.inode for e in gone} - {e.inode for e in dead}
        if not dead:
            return
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        closes = self.capture.forget_endpoints(
            [(e.inode, e.peer_inode, e.side, e.pid, e.comm) for e in dead], now)
        for raw in closes:
            self.pipeline.add_kernel_bytes(raw)

    def counts(self):
        """What was dropped, and how full the tables are (for the metrics)."""
        from tracer.metrics import PipelineCounts

        with self._lock:
            pipeline, capture = self.pipeline, self.capture.stats
            tables = {
                "processes": len(pipeline.assembler.table.processes),
                "containers": len(pipeline.assembler.containers),
                "cri_endpoints": len(pipeline.cri.endpoints),
                "cri_decoder_connections": len(pipeline.cri.decoder.connections()),
                "cri_calls": len(pipeline.cri.calls),
                "reorder_window_events": pipeline.pending_events,
                **{f"kernel_{name}": n for name, n in capture.kernel_tables.items()},
            }
            return PipelineCounts(kernel=dict(capture.kernel_stats), cri=dataclasses.asdict(pipeline.cri.stats),
                                  cri_decoder=pipeline.cri.decoder.stats.as_dict(),
                                  endpoints_reaped=capture.endpoints_reaped, tables=tables)

    def _close_endpoints_of_dead_processes(self) -> None:
        """A process that dies with a CRI socket open (a client that exits
        without closing, a runtime that crashes) leaves it to the kernel to
        close, with no close(2) to see.  The pipeline closes the endpoints
        of traced processes at their exit; this closes those of the others
        (kubelet is not in the runtime's process tree) once their process
        is gone: in the pipeline, through a recorded SOCKET_CLOSE event, and
        in the kernel's map of endpoints."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        endpoints = self.pipeline.cri.endpoints
        # a close sent last time may still wait in the reorder window
        self._swept &= set(endpoints)
        for endpoint in list(endpoints.values()):
            if endpoint.inode in self._swept or not endpoint.start_ns or same_process(endpoint.pid,
                                                                                        endpoint.start_ns):
                continue
            self._swept.add(endpoint.inode)
            self.capture.forget_endpoint(endpoint.inode)
            self.capture.stats.endpoints_reaped += 1
            self.pipeline.add_kernel_bytes(socket_close_event(
                SocketEndpoint(endpoint.inode, endpoint.peer_inode, 0, endpoint.side), now))

    def status(self) -> LiveStatus:
        with self._lock:
            stats = self.pipeline.stats
            sandboxes = sum(1 for a in self.pipeline.assembler.containers.values() if a.is_sandbox)
            return LiveStatus(stats.events + self.pipeline.pending_events, stats.lost, stats.decode_errors, sandboxes)

    def table_sizes(self) -> dict[str, int]:
        """Entries in every table the tracer keeps, in userspace and in the
        kernel's maps: in a daemon they must stay flat over months."""
        with self._lock:
            sizes = self.pipeline.table_sizes()
        return {**sizes, **self.capture.map_sizes()}

    def kernel_drops(self) -> dict[str, int]:
        """What the BPF programs could not do, by cause (tracked table full,
        socket bytes not copied, …), since tracing began."""
        with self._lock:
            return dict(self.capture.stats.kernel_stats)

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
        start of the capture's last drain, once it has drained at all."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        drained = self.capture.drained_until_ns
        return min(now, drained) if drained and not self._stop.is_set() else now

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
        if self._thread is not None:
            self._thread.join()
        self.stopped_at = time.monotonic()
        with self._lock:
            self.pipeline.note_lost(self.capture.new_losses(), time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self.pipeline.flush(everything=True)

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
