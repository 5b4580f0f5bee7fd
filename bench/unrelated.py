"""What tracing costs the node's other processes (issue #13), and how long the syscall program is
attached.

`cost_to_unrelated()`: interleaved rounds of phases, each with the tracer off, on (the default:
on demand), or in the fallback mode (`--syscall-programs always`, the design before on-demand:
sys_enter/sys_exit attached all the time), under two loads: `idle`, no pod starting, and
`starting`, one pod started every second (each stopped 3 s later: the runtime's steady churn).
Under both, a kubelet-like client (testbed/grpc-client, tests/grpcgo_client.py) holds one CRI
connection and polls as kubelet does, as on any node.  Each phase measures three unrelated
workloads: a real server and its own load generator (redis and redis-benchmark from Debian's
redis-tools, over loopback TCP), the 64-byte pipe loop and fork+exec of /bin/true (bench.workloads).
Ratios on/off and always/off, per load, each with its 95 % bootstrap interval.

`attached_share()`: one tracer, pods started at 1, 10 and 60 a minute; from the armer's log
(TRACER_ARMER_LOG), the share of each window during which the syscall program was attached, the
time from a worker's birth to the program attached, and, from the recording, the time from each
`runc create`'s exec to its runc init's first setns/unshare: the margin the attach has.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

from bench import workloads
from bench.process import RecordingTracer

STATES = ("off", "on", "always")
LOADS = ("idle", "starting")
WORKLOADS = ("server", "pipe", "fork")
SHARE_RATES = (1, 10, 60)  # pod starts per minute


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class SteadyStarts:
    """A kubelet-like grpc-go client on the bed's socket (polling from start to stop) and, with
    `period_s`, a pod started every `period_s` seconds, each stopped `keep_s` later."""

    def __init__(self, bed, log_dir: Path, period_s: float | None, keep_s: float = 3.0, tag: str = "steady"):
        from tracer_testbed.grpcgo import GrpcGoClient

        self.client = GrpcGoClient(str(bed.socket), log_dir / f"{tag}-calls.jsonl", bed.layout.pod_logs).start()
        self.period_s, self.keep_s, self.tag = period_s, keep_s, tag
        self.started: list[tuple[float, str]] = []   # (monotonic, name) of pods still running
        self.starts = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="steady-starts", daemon=True)
        self._serial = 0

    def start(self) -> SteadyStarts:
        if self.period_s:
            self._thread.start()
        return self

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            name = f"{self.tag}-{os.getpid()}-{self._serial}"
            self._serial += 1
            try:
                self.client.start_pod(name)
                self.started.append((time.monotonic(), name))
                self.starts += 1
            except RuntimeError as error:
                self.errors.append(str(error)[:200])
            while self.started and time.monotonic() - self.started[0][0] >= self.keep_s:
                self._stop_pod(self.started.pop(0)[1])
            next_at += self.period_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _stop_pod(self, name: str) -> None:
        try:
            self.client.stop_pod(name)
        except RuntimeError as error:
            self.errors.append(str(error)[:200])

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for _, name in self.started:
            self._stop_pod(name)
        self.started = []
        self.client.quit()


def _measure(server: workloads.KeyValueServer, config: dict) -> dict[str, float]:
    return {"server": server.run_load(), "pipe": workloads.pipe_rw(config["pipe_roundtrips"]),
            "fork": workloads.fork_exec(config["fork_execs"])}


def cost_to_unrelated(bed, config: dict, tracers: list[RecordingTracer], work: Path, ratio_interval) -> dict:
    server = workloads.KeyValueServer(requests=config["server_requests"]).start()
    samples = {(state, load): {w: [] for w in WORKLOADS} for state in STATES for load in LOADS}
    phases = []
    try:
        for index in range(config["unrelated_rounds"]):
            loads = LOADS if index % 2 == 0 else LOADS[::-1]
            for load in loads:
                order = STATES[index % 3:] + STATES[:index % 3]
                for state in (order if index % 2 == 0 else order[::-1]):
                    steady = SteadyStarts(bed, work, 1.0 if load == "starting" else None, tag=f"{load}-{state}")
                    tracer = None
                    try:
                        if state != "off":
                            extra = ["--syscall-programs", "always"] if state == "always" else []
                            tracer = RecordingTracer(bed.socket, extra=extra).start()
                            tracers.append(tracer)
                        steady.start()
                        time.sleep(config["unrelated_warmup_s"])
                        began, began_wall = time.monotonic(), time.time()
                        measured = _measure(server, config)
                        for workload, value in measured.items():
                            samples[(state, load)][workload].append(value)
                        phases.append({"state": state, "load": load, "wall": [round(began_wall, 1), round(time.time(), 1)],
                                       "seconds": round(time.monotonic() - began, 2),
                                       "starts": steady.starts, "start_errors": steady.errors[:3],
                                       **{w: round(v, 4) for w, v in measured.items()}})
                    finally:
                        steady.stop()
                        if tracer is not None:
                            tracer.stop()
    finally:
        server.stop()
    result: dict = {"phases": phases, "server_requests": config["server_requests"] * 2,
                    "pipe_roundtrips": config["pipe_roundtrips"], "fork_execs": config["fork_execs"]}
    for load in LOADS:
        for workload in WORKLOADS:
            off = samples[("off", load)][workload]
            entry = {"off_median": round(_median(off), 4), "off": [round(v, 4) for v in off]}
            for state in ("on", "always"):
                values = samples[(state, load)][workload]
                entry[f"{state}_median"] = round(_median(values), 4)
                entry[f"{state}_ratio"] = round(_median(values) / _median(off), 4)
                entry[f"{state}_ratio_95ci"] = ratio_interval(off, values)
                entry[state] = [round(v, 4) for v in values]
            result[f"{workload}_{load}"] = entry
    return result


# ---- the share of time the syscall program is attached ---------------------------------------------


def armer_intervals(log: Path) -> tuple[list[tuple[int, int]], list[float]]:
    """(attached, detached) ns pairs and request → attached latencies (s) from the armer's log."""
    intervals, latencies, attached = [], [], None
    for line in log.read_text().splitlines():
        words = line.split()
        if words[0] == "attach":
            attached = int(words[2])
            if int(words[1]):
                latencies.append((attached - int(words[1])) / 1e9)
        elif words[0] == "detach" and attached is not None:
            intervals.append((attached, int(words[1])))
            attached = None
    if attached is not None:
        intervals.append((attached, time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
    return intervals, latencies


def attached_within(intervals: list[tuple[int, int]], start: int, end: int) -> float:
    """Seconds of [start, end] covered by the intervals."""
    return sum(max(0, min(b, end) - max(a, start)) for a, b in intervals) / 1e9


def runc_margins(raw: Path) -> list[float]:
    """For each container: seconds from its `runc create`'s exec to the first setns/unshare of its
    runc init (stage 1): how long the armer has before a worker does what the trace shows."""
    from tracer.events import EventType, ExecEvent, NamespaceEvent, decode
    from tracer.pipeline.recording import RecordKind, read_recording

    events = sorted((decode(r.payload) for r in read_recording(raw).records if r.kind is RecordKind.KERNEL),
                    key=lambda e: e.header.ktime_ns)
    creates: dict[str, int] = {}   # container id → ktime of runc create's exec
    stage_of: dict[int, str] = {}  # pid → container id, through fork and exec
    margins: dict[str, float] = {}
    for event in events:
        header = event.header
        if isinstance(event, ExecEvent) and header.type == EventType.EXEC and "create" in event.argv \
                and event.filename.endswith("/runc"):
            creates[event.argv[-1]] = header.ktime_ns
            stage_of[header.tgid] = event.argv[-1]
        elif header.type == EventType.FORK and header.tgid in stage_of:
            stage_of[event.child_tgid] = stage_of[header.tgid]
        elif isinstance(event, NamespaceEvent) and stage_of.get(header.tgid) in creates:
            container = stage_of[header.tgid]
            margins.setdefault(container, (header.ktime_ns - creates[container]) / 1e9)
    return sorted(margins.values())


def attached_share(bed, config: dict, tracers: list[RecordingTracer], work: Path) -> dict:
    log, raw = work / "armer.log", work / "share.rec"
    log.write_text("")
    os.environ["TRACER_ARMER_LOG"] = str(log)
    try:
        tracer = RecordingTracer(bed.socket, raw=raw).start()
    finally:
        del os.environ["TRACER_ARMER_LOG"]
    tracers.append(tracer)
    windows = {}
    try:
        for rate in SHARE_RATES:
            window_s = config["share_windows_s"][rate]
            steady = SteadyStarts(bed, work, 60.0 / rate, keep_s=min(3.0, 30.0 / rate), tag=f"share{rate}")
            start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            steady.start()
            time.sleep(window_s)
            end = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            steady.stop()  # its last stops fall outside the window
            windows[rate] = (start, end, steady.starts)
    finally:
        tracer.stop()
    intervals, latencies = armer_intervals(log)
    result: dict = {"per_minute": {}}
    for rate, (start, end, starts) in windows.items():
        attached = attached_within(intervals, start, end)
        result["per_minute"][str(rate)] = {"window_s": round((end - start) / 1e9, 1), "starts": starts,
                                           "attached_s": round(attached, 3),
                                           "share": round(attached / ((end - start) / 1e9), 4),
                                           "attached_per_start_s": round(attached / starts, 3) if starts else None}
    margins = runc_margins(raw)
    result["attach_latency_s"] = {"count": len(latencies), "median": round(_median(latencies), 5) if latencies else None,
                                  "p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 5) if latencies else None,
                                  "max": round(max(latencies), 5) if latencies else None}
    result["runc_exec_to_first_namespace_s"] = {"count": len(margins),
                                                "min": round(margins[0], 5) if margins else None,
                                                "median": round(_median(margins), 5) if margins else None}
    return result


# ---- what the tracer's programs do while the unrelated workloads run, no pod starting --------------


def idle_program_time(bed, config: dict, tracers: list[RecordingTracer]) -> dict:
    """With the tracer on and no pod starting, each unrelated workload run alone with
    kernel.bpf_stats_enabled held on: how often the tracer's programs ran and for how long, per
    operation of the workload, against the workload's own time.  A noise-free upper bound of what
    tracing costs it (the runs of programs on behalf of anything else on the node count too; the
    counting adds two clock reads to each run)."""
    from bench import bpfstats

    server = workloads.KeyValueServer(requests=config["server_requests"]).start()
    tracer = RecordingTracer(bed.socket).start()
    tracers.append(tracer)
    result = {}
    try:
        time.sleep(1.0)
        with bpfstats.run_stats():
            for name, run, operations in (
                    ("server", server.run_load, 2 * config["server_requests"]),
                    ("pipe", lambda: workloads.pipe_rw(config["pipe_roundtrips"]), 2 * config["pipe_roundtrips"]),
                    ("fork", lambda: workloads.fork_exec(config["fork_execs"]), config["fork_execs"])):
                before = bpfstats.program_stats(tracer.pid)
                began = time.monotonic()
                seconds = run()
                wall = time.monotonic() - began
                ran = bpfstats.difference(before, bpfstats.program_stats(tracer.pid))
                total_ns = sum(p["run_time_ns"] for p in ran.values())
                result[name] = {"operations": operations, "seconds": round(seconds, 4),
                                "program_runs": {k: v["run_cnt"] for k, v in ran.items() if v["run_cnt"]},
                                "program_ns": total_ns,
                                "runs_per_operation": round(sum(v["run_cnt"] for v in ran.values()) / operations, 4),
                                "share_of_wall": round(total_ns / (wall * 1e9), 6)}
    finally:
        tracer.stop()
        server.stop()
    return result
