#!/usr/bin/env python3
"""What tracing costs processes that have nothing to do with containers.

Every read and write on the node passes the CRI probes' in-kernel filter
(one hash lookup for processes that hold no CRI socket), and every fork
and exec passes the process probes.  This runs two unrelated workloads —
small writes and reads on a pipe, and fork+exec of /bin/true — with the
tracer off and on, interleaved in one run (the machine is noisy), and
reports each ratio of medians (on / off).  Run as root after
scripts/install.sh.  JSON to stdout, a table to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROUNDS = 5
PIPE_ROUNDTRIPS = 100_000
FORK_EXECS = 500

PIPE_WORKLOAD = f"""
import os, time
r, w = os.pipe()
start = time.perf_counter()
for _ in range({PIPE_ROUNDTRIPS}):
    os.write(w, b"x" * 64)
    os.read(r, 64)
print(time.perf_counter() - start)
"""

FORK_WORKLOAD = f"""
import subprocess, time
start = time.perf_counter()
for _ in range({FORK_EXECS}):
    subprocess.run(["/bin/true"])
print(time.perf_counter() - start)
"""


def timed(workload: str) -> float:
    return float(subprocess.run([sys.executable, "-c", workload], capture_output=True, text=True,
                                check=True).stdout)


def start_tracer() -> subprocess.Popen:
    tracer = subprocess.Popen([str(Path(sys.executable).with_name("tracer")), "record", "--quiet"],
                              stderr=subprocess.PIPE, text=True)
    line = tracer.stderr.readline()
    if not line.startswith("recording"):
        raise SystemExit(f"tracer did not start: {line}")
    return tracer


def main() -> None:
    results: dict[str, dict[str, list[float]]] = {"pipe": {"off": [], "on": []}, "fork_exec": {"off": [], "on": []}}
    for _ in range(ROUNDS):
        for state in ("off", "on"):
            tracer = start_tracer() if state == "on" else None
            try:
                results["pipe"][state].append(timed(PIPE_WORKLOAD))
                results["fork_exec"][state].append(timed(FORK_WORKLOAD))
            finally:
                if tracer is not None:
                    tracer.send_signal(signal.SIGINT)
                    tracer.communicate(timeout=60)
    report = {}
    for name, runs in results.items():
        off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
        report[name] = {"off_s": round(off, 4), "on_s": round(on, 4), "ratio": round(on / off, 4),
                        "runs": runs}
        print(f"{name:10} off {off:.3f} s  on {on:.3f} s  ratio {on / off:.3f}", file=sys.stderr)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
