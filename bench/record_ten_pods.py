#!/usr/bin/env python3
"""The figures of a 10-pod recording (run as root, after scripts/install.sh).

Runs `tracer record` as its own process while a separate "kubelet" process
starts 10 pods concurrently on the project's test bed, then stops it with
SIGINT, and reports:
  - the tracer's CPU time (user + system) while the pods start, and over
    its whole life (which includes compiling the BPF program), its RSS
    after attaching and its peak RSS,
  - the time from the end of recording to the trace file being written,
  - attach time, and whether every pod got its trace.

Also starts 10 pods with no tracer running, in the same run, so that the
pod start latency can be compared (ratio, tracer-on / tracer-off).
Writes JSON to stdout and a table to stderr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tracer.testbed import PodSpec, Testbed
from tracer.testbed.kubelet import start_pods_as_kubelet

PODS = 10


def start_latencies(pods) -> list[float]:
    """RunPodSandbox → StartContainer, in ms, as the client measured it."""
    return [(p.timing("StartContainer").end_ns - p.timing("RunPodSandbox").start_ns) / 1e6 for p in pods]


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def run_pods(bed: Testbed, tag: str) -> list:
    specs = [PodSpec(name=f"{tag}-{i}", namespace="bench", command=("sleep", "3600")) for i in range(PODS)]
    pods = start_pods_as_kubelet(bed.socket, specs, bed.layout.pod_logs)
    return pods


def traced_run(bed: Testbed, work: Path) -> dict:
    output, raw = work / "traces.json", work / "capture.rec"
    command = [str(Path(sys.executable).with_name("tracer")), "record", "--quiet", "--output", str(output), "--raw", str(raw),
               "--cri-socket", str(bed.socket)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    first_line = process.stderr.readline()
    attach_s = time.monotonic() - started
    if not first_line.startswith("recording"):
        raise SystemExit(f"tracer did not start: {first_line}{process.stderr.read()}")
    cpu_at_ready, rss_at_ready = cpu_seconds(process.pid), rss_mb(process.pid)
    pods = run_pods(bed, "on")
    time.sleep(0.5)
    cpu_during = cpu_seconds(process.pid) - cpu_at_ready
    process.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read()
    written = re.search(r"traces written (\d+) ms after recording stopped", stderr)
    traces = json.loads(output.read_text())["data"]
    uids = {t["spans"][0]["tags"][i]["value"] for t in traces for i, tag in enumerate(t["spans"][0]["tags"])
            if tag["key"] == "k8s.pod.uid"}
    result = {
        "exit_status": status, "attach_s": round(attach_s, 3),
        "tracer_cpu_during_pod_starts_s": round(cpu_during, 3), "tracer_rss_after_attach_mb": rss_at_ready,
        "tracer_cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "tracer_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "write_after_stop_ms": int(written.group(1)) if written else None,
        "traces": len(traces), "pods_with_trace": sum(p.spec.uid in uids for p in pods),
        "latency_ms": start_latencies(pods), "pods": pods,
    }
    return result


def main() -> None:
    with Testbed() as bed, tempfile.TemporaryDirectory() as tmp:
        # the same state for both: no other pods running
        baseline = run_pods(bed, "off")
        for pod in baseline:
            bed.stop_pod(pod)
        traced = traced_run(bed, Path(tmp))
        for pod in traced.pop("pods"):
            bed.stop_pod(pod)
    off, on = start_latencies(baseline), traced.pop("latency_ms")
    report = {
        **traced,
        "pod_start_ms_tracer_off_median": round(statistics.median(off), 1),
        "pod_start_ms_tracer_on_median": round(statistics.median(on), 1),
        "pod_start_ratio_on_off": round(statistics.median(on) / statistics.median(off), 3),
    }
    json.dump(report, sys.stdout, indent=1)
    print(file=sys.stdout)
    for key, value in report.items():
        print(f"{key:34} {value}", file=sys.stderr)


if __name__ == "__main__":
    main()
