"""A live recording: capture → pipeline (→ raw recording) until stopped."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tracer.capture import Capture, CaptureConfig
from tracer.enrich import Enricher
from tracer.format import Clock
from tracer.pipeline import Pipeline, recording_meta, stats_record
from tracer.recording import RecordingWriter, RecordKind
from tracer.spans import Trace

LOSS_CHECK_INTERVAL_S = 0.1


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

    def __init__(self, config: RecordConfig, capture: Capture | None = None):
        """`capture`: one made beforehand (of config.capture), e.g. to have
        begun loading its programs while the caller was still importing."""
        self.config = config
        self.clock = Clock.measure()
        self._writer = RecordingWriter(config.raw_path) if config.raw_path else None
        self.pipeline = Pipeline(self.clock, config.node_name, Enricher(), self._writer)
        self.capture = capture if capture is not None else Capture(config.capture)
        self.capture.on_batch = self._on_batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_loss_check = 0.0
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

    def status(self) -> LiveStatus:
        with self._lock:
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
            # Only up to the last drain: events stamped since then may still
            # sit in the ring buffer, and a start is not over before them.
            now = self.capture.drained_through_ns or time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            self.pipeline.flush(now_ktime_ns=now)
            return self.pipeline.take_finished_traces(now, quiet_ns, max_age_ns)

    def stop_capture(self) -> None:
        """Stops the capture thread and processes every event left, but keeps
        the BPF programs attached (detaching takes seconds); `stop` detaches.
        Lets the daemon export the last pod starts before detaching."""
        self.stop_requested_at = time.monotonic()
        self._stop.set()
        self.capture.interrupt()
        if self._thread is not None:
            self._thread.join()
        self.stopped_at = time.monotonic()
        with self._lock:
            self.pipeline.note_lost(self.capture.new_losses(), time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self.capture.read_kernel_stats()
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
                self._writer.write_json(RecordKind.STATS, stats_record(self.pipeline))
                self._writer.close()
                self._writer = None
        if detach:
            self.detach()
        return traces

    def detach(self) -> None:
        self.capture.close()
