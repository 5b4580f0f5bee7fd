"""sudo .venv/bin/python -m bench [--pods N] [--quick] [--output FILE]

Runs every benchmark on the project's containerd test bed and writes JSON
(to --output, else stdout) and a table of figures with their budgets
(stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tracer_testbed import Testbed, TestbedError

from bench import bpfstats, steady, unrelated, workloads
from bench.floor import FloorPrograms
from bench.pods import APP_EXECUTABLE, start_latency_ms, start_pods, stop_pods
from bench.process import CpuWindow, RecordingTracer, rss_mb, tracer_command
from tracer.files import write_private

TESTS = Path(__file__).resolve().parent.parent / "tests"

# name: (budget, unit, description); the figure must be ≤ its budget; None: reported, with no budget
BUDGETS = {
    "pod_start_ratio": (1.03, "ratio", "pod start latency (RunPodSandbox → StartContainer), on/off"),
    "fork_exec_ratio": (1.03, "ratio", "fork+exec of /bin/true, on/off"),
    "pipe_rw_ratio": (1.05, "ratio", "small writes/reads on a pipe, on/off"),
    "burst_events_lost": (0, "events", "events lost, a burst of pods started at once"),
    "burst_traces_incomplete": (0, "traces", "pods without a complete and correct trace, of the burst"),
    "idle_cpu_pct": (1.0, "% core", "tracer CPU, idle"),
    "busy_cpu_pct": (10.0, "% core", "tracer CPU, ~10 pod starts per second"),
    "rss_mb": (200.0, "MB", "tracer RSS (peak seen)"),
    "attach_s": (2.0, "s", "attach: process start → 'recording' (max)"),
    "detach_s": (1.0, "s", "detach: SIGINT/SIGTERM → exit (max)"),
    "export_p95_s": (1.0, "s", "StartContainer returned → trace exported (daemon, p95)"),
    # the cost to the node's other processes (bench/unrelated.py)
    "server_idle_ratio": (1.01, "ratio", "redis + redis-benchmark, no pod starting, on/off"),
    "pipe_idle_ratio": (1.01, "ratio", "pipe loop, no pod starting, on/off"),
    "fork_idle_ratio": (1.01, "ratio", "fork+exec, no pod starting, on/off"),
    "server_starting_ratio": (1.05, "ratio", "redis + redis-benchmark, 1 pod start/s, on/off"),
    "pipe_starting_ratio": (1.05, "ratio", "pipe loop, 1 pod start/s, on/off"),
    "fork_starting_ratio": (1.05, "ratio", "fork+exec, 1 pod start/s, on/off"),
    "attached_share_1_per_min": (None, "share", "syscall program attached, 1 pod start/min"),
    "attached_share_10_per_min": (None, "share", "syscall program attached, 10 pod starts/min"),
    "attached_share_60_per_min": (None, "share", "syscall program attached, 60 pod starts/min"),
    "attach_latency_p95_s": (None, "s", "worker born → syscall program attached (p95)"),
    # the steady state: pods running, none starting, kubelet-like polling (bench/steady.py)
    "steady_cpu_pct": (1.0, "% core", "daemon CPU, many running pods polled, no starts"),
    "steady_rss_mb": (143.0, "MiB", "daemon RSS (150 MB), many running pods polled, no starts"),
    "steady_small_cpu_pct": (None, "% core", "daemon CPU, fewer running pods polled, no starts"),
    "steady_small_rss_mb": (None, "MiB", "daemon RSS, fewer running pods polled, no starts"),
    "steady_cpu_us_per_call": (None, "µs", "daemon CPU per CRI call view, many pods polled"),
}


def machine() -> dict:
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio_interval(off: list[float], on: list[float], resamples: int = 2000) -> list[float]:
    """A 95 % bootstrap interval of median(on) / median(off): how far this
    machine's noise lets the run resolve the ratio (seeded: the same samples
    give the same interval)."""
    if not off or not on:
        return []
    draw = random.Random(0).choices
    ratios = sorted(median(draw(on, k=len(on))) / median(draw(off, k=len(off))) for _ in range(resamples))
    return [round(ratios[int(0.025 * resamples)], 4), round(ratios[int(0.975 * resamples) - 1], 4)]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]


def open_testbed(wait_s: float = 1800) -> Testbed:
    """The test bed, waiting while another run holds its lock."""
    deadline = time.monotonic() + wait_s
    while True:
        bed = Testbed()
        try:
            bed.start()
            return bed
        except TestbedError as error:
            if "another test bed" not in str(error) or time.monotonic() > deadline:
                raise
            print(f"test bed busy ({error}); waiting", file=sys.stderr)
            time.sleep(10)


STATES = ("off", "on", "floor")


def interleaved(bed: Testbed, config: dict, tracers: list[RecordingTracer], resources: dict) -> dict:
    """(a), (b), (c) and the idle figure of (e): rounds of tracer-off and tracer-on phases,
    alternating which comes first; each on phase starts and stops its own tracer.  Each
    round also has a "floor" phase: empty raw sys_enter/sys_exit programs in place of the
    tracer, the least any program on those hooks costs."""
    samples = {state: {"pod_ms": [], "fork_s": [], "pipe_s": []} for state in STATES}
    rounds, pods_per_round = config["rounds"], config["pods"] // config["rounds"]
    extra = config["pods"] % config["rounds"]
    for index in range(rounds):
        pods_this_round = pods_per_round + (1 if index < extra else 0)
        order = STATES[index % 3:] + STATES[:index % 3]
        for state in (order if index % 2 == 0 else order[::-1]):
            tracer = RecordingTracer(bed.socket).start() if state == "on" else None
            floor = FloorPrograms() if state == "floor" else None
            started = []
            try:
                if tracer is not None:
                    tracers.append(tracer)
                    resources["rss_after_attach_mb"].append(rss_mb(tracer.pid, children=True))
                    if index == 0:  # (e) idle: tracer running, no pods
                        time.sleep(0.5)
                        window = CpuWindow(tracer.pid, children=True)
                        time.sleep(config["idle_s"])
                        resources["idle"] = window.stop()
                started = []
                for _ in range(0, pods_this_round, config["batch"]):
                    batch = start_pods(bed, f"{state}", min(config["batch"], pods_this_round - len(started)))
                    samples[state]["pod_ms"] += [start_latency_ms(p) for p in batch]
                    started += batch
                samples[state]["fork_s"].append(workloads.fork_exec(config["fork_execs"]))
                samples[state]["pipe_s"].append(workloads.pipe_rw(config["pipe_roundtrips"]))
                if tracer is not None:
                    resources["rss_mb"].append(rss_mb(tracer.pid, children=True))
            finally:
                if tracer is not None:
                    tracer.stop(signal.SIGINT if index % 2 == 0 else signal.SIGTERM)
                if floor is not None:
                    floor.stop()
                stop_pods(bed, started)
    result = {}
    for name, key in (("pod_start", "pod_ms"), ("fork_exec", "fork_s"), ("pipe_rw", "pipe_s")):
        off, on = median(samples["off"][key]), median(samples["on"][key])
        result[name] = {"off_median": round(off, 4), "on_median": round(on, 4), "ratio": round(on / off, 4),
                        "ratio_95ci": ratio_interval(samples["off"][key], samples["on"][key]),
                        "off": [round(v, 4) for v in samples["off"][key]],
                        "on": [round(v, 4) for v in samples["on"][key]]}
        if samples["floor"][key]:
            floor = median(samples["floor"][key])
            result[name].update(floor_median=round(floor, 4), floor_ratio=round(floor / off, 4),
                                floor_ratio_95ci=ratio_interval(samples["off"][key], samples["floor"][key]),
                                floor=[round(v, 4) for v in samples["floor"][key]])
    result["pod_start"]["unit"], result["fork_exec"]["unit"], result["pipe_rw"]["unit"] = "ms", "s", "s"
    result["fork_exec"]["per_run"], result["pipe_rw"]["per_run"] = config["fork_execs"], config["pipe_roundtrips"]
    return result


def busy(bed: Testbed, config: dict, tracers: list[RecordingTracer], resources: dict) -> None:
    """(e) during starts: the tracer's CPU while batches of 10 pods start each second."""
    tracer = RecordingTracer(bed.socket).start()
    tracers.append(tracer)
    started = []
    try:
        time.sleep(0.5)
        window = CpuWindow(tracer.pid, children=True)
        begin = time.monotonic()
        for second in range(config["busy_seconds"]):
            started += start_pods(bed, "busy", config["busy_per_second"])
            remaining = begin + second + 1 - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        resources["busy"] = {**window.stop(), "pods": len(started),
                             "pods_per_s": round(len(started) / (time.monotonic() - begin), 2)}
        resources["rss_mb"].append(rss_mb(tracer.pid, children=True))
    finally:
        tracer.stop()
        stop_pods(bed, started)


def bpf_profile(bed: Testbed, config: dict, tracers: list[RecordingTracer]) -> dict:
    """Where the kernel side's time goes: each BPF program's run count and average
    run time (kernel.bpf_stats_enabled, held only for this phase) while the tracer
    watches pods start and the unrelated workloads run.  The floor's empty programs
    run alongside: their average is what the counting itself adds to every run."""
    tracer = RecordingTracer(bed.socket).start()
    tracers.append(tracer)
    floor = FloorPrograms()
    pods = []
    try:
        with bpfstats.run_stats():
            before = {"tracer": bpfstats.program_stats(tracer.pid), "floor": bpfstats.program_stats(floor.process.pid)}
            workloads.pipe_rw(config["pipe_roundtrips"] // 5)
            workloads.fork_exec(config["fork_execs"] // 5)
            pods = start_pods(bed, "profile", config["batch"])
            after = {"tracer": bpfstats.program_stats(tracer.pid), "floor": bpfstats.program_stats(floor.process.pid)}
    finally:
        floor.stop()
        tracer.stop()
        stop_pods(bed, pods)
    return {who: bpfstats.difference(before[who], after[who]) for who in before}


def burst(bed: Testbed, count: int, work: Path, tracers: list[RecordingTracer], resources: dict) -> dict:
    """(d): `count` pods started at once under `tracer record --raw`; the recording is
    replayed and each pod's trace checked with tests/tracecheck.py."""
    sys.path.insert(0, str(TESTS))
    from tracecheck import ExpectedPod, check_cri_calls, check_pod_trace, trace_for

    from tracer.pipeline.pipeline import replay

    raw = work / "burst.rec"
    tracer = RecordingTracer(bed.socket, raw=raw).start()
    tracers.append(tracer)
    pods = []
    try:
        pods = start_pods(bed, "burst", count)
        time.sleep(1.0)
        resources["rss_mb"].append(rss_mb(tracer.pid, children=True))
    finally:
        try:
            stderr = tracer.stop()
        finally:
            stop_pods(bed, pods)
    counts = re.search(r"events (\d+), lost (\d+), undecodable (\d+)", stderr)
    traces = replay(str(raw)).traces()
    container_ids = {cid for p in pods for cid in (p.sandbox_id, p.container_id)}
    complete, failures = 0, []
    for pod in pods:
        try:
            trace = trace_for(traces, pod.spec.uid)
            check_pod_trace(trace, ExpectedPod.from_started(pod, APP_EXECUTABLE), container_ids)
            check_cri_calls(trace, pod)
            complete += 1
        except (AssertionError, KeyError) as error:
            failures.append(f"{pod.spec.name}: {type(error).__name__} {str(error)[:300]}")
    return {"pods": len(pods), "traces": len(traces), "complete": complete, "failures": failures[:10],
            "events": int(counts.group(1)) if counts else None, "lost": int(counts.group(2)) if counts else None,
            "undecodable": int(counts.group(3)) if counts else None}


def export_latency(bed: Testbed, count: int, work: Path) -> dict:
    """(g): `tracer daemon --quiet-seconds 0.5` exporting over OTLP/gRPC to the test
    receiver (tests/otlp_receiver.py); for each pod, started one after the other,
    the time from StartContainer's return (client wall clock) to the arrival of
    the last request carrying a span of its trace (receiver wall clock)."""
    import urllib.request

    sys.path.insert(0, str(TESTS))
    from otlp_receiver import GrpcReceiver, free_port

    from tracer.spans.build import trace_id_for

    arrivals: dict[str, int] = {}
    port = free_port()
    log = work / "daemon.log"
    with GrpcReceiver() as receiver:
        add = receiver.received.add

        def stamped_add(request) -> None:
            now = time.time_ns()
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        arrivals[span.trace_id.hex()] = now
            add(request)

        receiver.received.add = stamped_add
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        command = [*tracer_command(), "daemon", "--quiet-seconds", "0.5", "--schedule-delay-ms", "50",
                   "--cri-socket", str(bed.socket), "--metrics-address", f"127.0.0.1:{port}", "--log-level", "WARNING"]
        pods = []
        with log.open("wb") as out:
            started = time.monotonic()
            daemon = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                if daemon.poll() is not None:
                    raise RuntimeError(f"tracer daemon exited: {log.read_text(errors='replace')}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() - started > 60:
                    raise RuntimeError("tracer daemon not ready after 60 s")
                time.sleep(0.05)
            ready_s = time.monotonic() - started
            for _ in range(count):
                pods += start_pods(bed, "export", 1)
                time.sleep(1.5)  # past the quiet period, so that each pod is exported on its own
            wanted = {trace_id_for(p.sandbox_id) for p in pods}
            deadline = time.monotonic() + 10
            while not wanted <= arrivals.keys() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # any late spans of the same traces
        finally:
            stopping = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            stop_s = time.monotonic() - stopping
            stop_pods(bed, pods)
    latencies = [(arrivals[trace_id_for(p.sandbox_id)] - p.timing("StartContainer").end_ns) / 1e9
                 for p in pods if trace_id_for(p.sandbox_id) in arrivals]
    return {"pods": len(pods), "exported": len(latencies), "latency_s": [round(v, 3) for v in latencies],
            "p50_s": round(median(latencies), 3) if latencies else None,
            "p95_s": round(p95(latencies), 3) if latencies else None,
            "daemon_ready_s": round(ready_s, 3), "daemon_stop_s": round(stop_s, 3),
            "daemon_exit_code": daemon.returncode}


def figures(report: dict) -> dict:
    """Every figure of BUDGETS, with its budget and whether it was met."""
    inter, res, bst, exp, f = report["interleaved"], report["resources"], report["burst"], report["export"], {}
    f["pod_start_ratio"] = inter["pod_start"]["ratio"]
    f["fork_exec_ratio"] = inter["fork_exec"]["ratio"]
    f["pipe_rw_ratio"] = inter["pipe_rw"]["ratio"]
    f["burst_events_lost"] = bst["lost"]
    f["burst_traces_incomplete"] = bst["pods"] - bst["complete"]
    f["idle_cpu_pct"] = res["idle"]["cpu_pct_core"]
    f["busy_cpu_pct"] = res["busy"]["cpu_pct_core"]
    f["rss_mb"] = max(res["rss_mb"])
    f["attach_s"] = round(max(report["attach_detach"]["attach_s"]), 3)
    f["detach_s"] = round(max(report["attach_detach"]["detach_s"]), 3)
    f["export_p95_s"] = exp["p95_s"]
    for workload in unrelated.WORKLOADS:
        for load in unrelated.LOADS:
            f[f"{workload}_{load}_ratio"] = report["unrelated"][f"{workload}_{load}"]["on_ratio"]
    share = report["attached_share"]
    for rate in unrelated.SHARE_RATES:
        f[f"attached_share_{rate}_per_min"] = share["per_minute"][str(rate)]["share"]
    f["attach_latency_p95_s"] = share["attach_latency_s"]["p95"]
    small, many = (report["steady"][str(n)] for n in report["config"]["steady_pods"])
    f["steady_cpu_pct"], f["steady_rss_mb"] = many["cpu_pct_core"], many["rss_mb"]
    f["steady_small_cpu_pct"], f["steady_small_rss_mb"] = small["cpu_pct_core"], small["rss_mb"]
    f["steady_cpu_us_per_call"] = many["cpu_us_per_call_view"]
    out = {}
    for name, value in f.items():
        budget, unit, what = BUDGETS[name]
        if name.startswith("steady"):  # the pod counts are the run's
            what = what.replace("many", str(many["pods"])).replace("fewer", str(small["pods"]))
        out[name] = {"value": value, "budget": budget, "unit": unit, "what": what,
                     "met": None if budget is None else (value is not None and value <= budget)}
    return out


def table(report: dict) -> str:
    m = report["machine"]
    lines = [f"machine: {m['nproc']} vCPU ({m['cpu_model']}), {m['memory_gb']} GB, kernel {m['kernel']}; "
             f"{report['config']['pods']} pods each on/off, burst {report['config']['burst']}"
             + (" (--quick)" if report["config"]["quick"] else ""),
             f"{'figure':58} {'value':>10} {'budget':>10}  met"]
    for figure in report["figures"].values():
        unit = figure["unit"]
        budget = ("—" if figure["budget"] is None else f"≤ {figure['budget']}" if unit in ("ratio", "share")
                  else f"≤ {figure['budget']} {unit}")
        value = "n/a" if figure["value"] is None else (f"{figure['value']}" if unit in ("ratio", "share")
                                                       else f"{figure['value']} {unit}")
        met = "" if figure["met"] is None else "met" if figure["met"] else "NOT MET"
        lines.append(f"{figure['what']:58} {value:>10} {budget:>10}  {met}")
    inter = report["interleaved"]
    lines.append(f"  pod start median off {inter['pod_start']['off_median']} ms, on {inter['pod_start']['on_median']} ms; "
                 f"fork+exec off {inter['fork_exec']['off_median']} s, on {inter['fork_exec']['on_median']} s; "
                 f"pipe off {inter['pipe_rw']['off_median']} s, on {inter['pipe_rw']['on_median']} s")
    lines.append("  95 % intervals (bootstrap), on/off: " + ", ".join(
        f"{name.replace('_', ' ')} {inter[name]['ratio_95ci'][0]}–{inter[name]['ratio_95ci'][1]}"
        for name in ("pod_start", "fork_exec", "pipe_rw") if inter[name].get("ratio_95ci")))
    attach = report["attach_detach"]
    lines.append(f"  attach median {median(attach['attach_s']):.3f} s, detach median {median(attach['detach_s']):.3f} s "
                 f"(of {len(attach['attach_s'])} tracer starts)")
    if "floor_ratio" in inter["pipe_rw"]:
        lines.append(f"  floor (empty raw sys_enter+sys_exit programs, no tracer), on/off: pod start "
                     f"{inter['pod_start']['floor_ratio']}, fork+exec {inter['fork_exec']['floor_ratio']}, "
                     f"pipe {inter['pipe_rw']['floor_ratio']}")
    res = report["resources"]
    if res.get("rss_after_attach_mb"):
        lines.append(f"  tracer RSS right after attach {max(res['rss_after_attach_mb'])} MB (max)")
    for who, programs in report.get("bpf_profile", {}).items():
        ran = ", ".join(f"{name} {p['avg_ns']} ns ×{p['run_cnt']}" for name, p in programs.items() if p["run_cnt"])
        lines.append(f"  BPF programs ({who}): {ran or 'none ran'}")
    busy_ = report["resources"]["busy"]
    lines.append(f"  busy: {busy_['pods']} pods at {busy_['pods_per_s']}/s, tracer {busy_['cpu_s']} s CPU "
                 f"in {busy_['wall_s']} s; burst: {report['burst']['complete']}/{report['burst']['pods']} "
                 f"complete, {report['burst']['events']} events")
    lines += unrelated_table_lines(report)
    for count, steady_ in report["steady"].items():
        lines.append(f"  steady, {count} pods: {steady_['cri_call_views_per_s']} CRI call views/s "
                     f"({steady_['by_resolution']}), RSS by mapping {steady_['rss_by_mapping_mb']}")
    return "\n".join(lines)


def unrelated_table_lines(report: dict) -> list[str]:
    """Issue #13's lines (bench/unrelated.py): the off medians (the host's speed), the intervals,
    the fallback mode's ratios, the attach's margin."""
    lines = []
    if "unrelated" in report:
        u = report["unrelated"]
        for load in unrelated.LOADS:
            parts = []
            for workload in unrelated.WORKLOADS:
                e = u[f"{workload}_{load}"]
                ci = e["on_ratio_95ci"]
                parts.append(f"{workload} off {e['off_median']} s, on {e['on_ratio']} ({ci[0]}–{ci[1]}) "
                             f"always {e['always_ratio']}" if ci else f"{workload} on {e['on_ratio']}")
            lines.append(f"  {load}: " + "; ".join(parts))
    if "idle_program_time" in report:
        lines.append("  tracer programs while each ran alone, no pod starting: " + "; ".join(
            f"{name} {v['runs_per_operation']} runs/op, {v['share_of_wall']:.4%} of its time"
            for name, v in report["idle_program_time"].items()))
    if "attached_share" in report:
        share = report["attached_share"]
        per = ", ".join(f"{rate}/min {v['share']:.2%} ({v['attached_per_start_s']} s a start, {v['starts']} starts)"
                        for rate, v in share["per_minute"].items())
        lines.append(f"  syscall program attached: {per}")
        lat, margin = share["attach_latency_s"], share["runc_exec_to_first_namespace_s"]
        lines.append(f"  attach: median {lat['median']} s, p95 {lat['p95']} s, max {lat['max']} s of {lat['count']}; "
                     f"runc create exec → runc init's first setns/unshare: min {margin['min']} s, "
                     f"median {margin['median']} s of {margin['count']}")
    return lines


def make_config(quick: bool, pods: int | None = None) -> dict:
    if quick:
        config = {"pods": 2, "rounds": 2, "batch": 1, "fork_execs": 50, "pipe_roundtrips": 10_000, "idle_s": 1.0,
                  "busy_seconds": 1, "busy_per_second": 3, "burst": 3, "export_pods": 2}
    else:
        # 10 rounds of 3 pods per state: more rounds resolve the one-per-phase
        # workloads better; 6 s of busy starts: the CPU figure is counted in
        # 10 ms clock ticks
        config = {"pods": 30, "rounds": 10, "batch": 3, "fork_execs": 2000, "pipe_roundtrips": 500_000,
                  "idle_s": 5.0, "busy_seconds": 6, "busy_per_second": 10, "burst": 50, "export_pods": 20}
    config.update(unrelated_config(quick))
    # kubelet's default of at most 110 pods a node, and a small node's 20
    config.update({"steady_pods": (2, 3), "steady_window_s": 3.0} if quick else
                  {"steady_pods": (20, 110), "steady_window_s": 60.0})
    if pods is not None:
        config["pods"] = pods
    config["rounds"] = max(1, min(config["rounds"], config["pods"]))
    config["quick"] = quick
    return config


def unrelated_config(quick: bool) -> dict:
    """Issue #13's phases (bench/unrelated.py)."""
    if quick:
        return {"unrelated_rounds": 1, "unrelated_warmup_s": 0.5, "server_requests": 2000,
                "share_windows_s": {1: 4, 10: 6, 60: 3}}
    # 6 rounds × 2 loads × 3 states; redis-benchmark's 2 × 100 000 requests take ~4 s here
    return {"unrelated_rounds": 6, "unrelated_warmup_s": 2.0, "server_requests": 100_000,
            "share_windows_s": {1: 180, 10: 60, 60: 30}}


def run(config: dict, bed: Testbed) -> dict:
    """Every benchmark on a running test bed; the report with its figures."""
    report: dict = {"machine": machine(), "config": config}
    tracers: list[RecordingTracer] = []
    resources: dict = {"rss_mb": [], "rss_after_attach_mb": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            work = Path(tmp)
            report["interleaved"] = interleaved(bed, config, tracers, resources)
            report["bpf_profile"] = bpf_profile(bed, config, tracers)
            busy(bed, config, tracers, resources)
            report["burst"] = burst(bed, config["burst"], work, tracers, resources)
            report["export"] = export_latency(bed, config["export_pods"], work)
            # issue #13 (bench/unrelated.py)
            report["unrelated"] = unrelated.cost_to_unrelated(bed, config, tracers, work, ratio_interval)
            report["idle_program_time"] = unrelated.idle_program_time(bed, config, tracers)
            report["attached_share"] = unrelated.attached_share(bed, config, tracers, work)
            report["steady"] = steady.run_steady(bed, work, config["steady_pods"], config["steady_window_s"])
    finally:
        for tracer in tracers:
            tracer.kill()
    report["resources"] = resources
    report["attach_detach"] = {"attach_s": [round(t.attach_s, 3) for t in tracers],
                               "detach_s": [round(t.detach_s, 3) for t in tracers]}
    report["figures"] = figures(report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=None, help="pods each tracer-on and tracer-off (default 30)")
    parser.add_argument("--quick", action="store_true", help="small counts, for tests")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (BPF and the containerd test bed)")
    config = make_config(args.quick, args.pods)
    bed = open_testbed()
    try:
        report = run(config, bed)
    finally:
        bed.stop()
    text = json.dumps(report, indent=1)
    if args.output:
        write_private(args.output, (text + "\n").encode())
    else:
        print(text)
    print(table(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
