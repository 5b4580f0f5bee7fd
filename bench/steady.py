"""The steady state of a node: pods running, none starting, kubelet polling.

A real grpc-go client (testbed/grpc-client) polls the runtime as kubelet
v1.28 does (PLEG relists every second, status, stats, images) over one
long-lived connection; it first starts the pods, then `tracer daemon`
attaches (late, as on every real node) and runs for a window idle of pod
starts.  Figures: the daemon's CPU share and RSS over the window (with its
armer's), the CRI calls it saw, and its CPU per call."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tracer_testbed import Testbed
from tracer_testbed.grpcgo import GrpcGoClient

from bench.process import CpuWindow, rss_breakdown_mb, tracer_command

SETTLE_S = 10.0  # after the attach: the learning, the first relists, the daemon's first exports


def _metric(port: int, name: str) -> dict[str, float]:
    """Samples of one metric family from the daemon's /metrics, by label text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_daemon(bed: Testbed, port: int, log: Path) -> subprocess.Popen:
    command = [*tracer_command(), "daemon", "--no-otlp", "--cri-socket", str(bed.socket),
               "--metrics-address", f"127.0.0.1:{port}", "--log-level", "WARNING"]
    with log.open("wb") as out:
        daemon = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"tracer daemon exited: {log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return daemon
        except OSError:
            pass
        time.sleep(0.1)
    daemon.kill()
    raise RuntimeError("tracer daemon not ready after 120 s")


def steady_state(bed: Testbed, work: Path, pods: int, window_s: float) -> dict:
    """`pods` running pods, a kubelet-like client polling, the daemon idle of
    starts for `window_s`."""
    client = GrpcGoClient(str(bed.socket), work / f"calls-{pods}.jsonl", bed.layout.pod_logs).start()
    names = []
    daemon = None
    try:
        for i in range(pods):
            client.start_pod(f"steady-{i}", command=["sleep", "3600"], grace_period_s=0)
            names.append(f"steady-{i}")
        port = _free_port()
        daemon = _start_daemon(bed, port, work / f"daemon-{pods}.log")
        time.sleep(SETTLE_S)
        calls_before = sum(_metric(port, "tracer_cri_calls_total").values())
        window = CpuWindow(daemon.pid, children=True)  # with its armer
        time.sleep(window_s)
        result = window.stop()
        by_resolution = _metric(port, "tracer_cri_calls_total")
        calls = sum(by_resolution.values()) - calls_before
        result.update({
            "rss_by_mapping_mb": rss_breakdown_mb(daemon.pid),
            "pods": pods, "cri_call_views": int(calls), "cri_call_views_per_s": round(calls / result["wall_s"], 1),
            "cpu_us_per_call_view": round(1e6 * result["cpu_s"] / calls, 1) if calls else None,
            "by_resolution": {key.strip("{}"): int(v) for key, v in by_resolution.items()},
        })
        return result
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        for name in names:
            client.stop_pod(name)
        client.quit()


def run_steady(bed: Testbed, work: Path, pod_counts: tuple[int, ...], window_s: float) -> dict:
    return {str(n): steady_state(bed, work, n, window_s) for n in pod_counts}


if __name__ == "__main__":  # python -m bench.steady [PODS ...]: this benchmark alone
    import json
    import sys
    import tempfile

    counts = tuple(int(a) for a in sys.argv[1:]) or (20, 110)
    if os.geteuid() != 0:
        raise SystemExit("needs root (BPF and the containerd test bed)")
    with Testbed() as bed, tempfile.TemporaryDirectory(prefix="steady-") as tmp:
        print(json.dumps(run_steady(bed, Path(tmp), counts, 60.0), indent=1))
