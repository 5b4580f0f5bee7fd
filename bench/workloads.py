"""Unrelated workloads: what tracing costs processes that have nothing to do with containers.

Every read and write on the node passes the CRI probes' in-kernel filter
(one hash lookup for processes that hold no CRI socket), and every fork
and exec passes the process probes.  Each workload runs in its own
interpreter and prints its own duration.
"""

from __future__ import annotations

import subprocess
import sys

PIPE_WORKLOAD = """
import os, sys, time
r, w = os.pipe()
start = time.perf_counter()
for _ in range({n}):
    os.write(w, b"x" * 64)
    os.read(r, 64)
print(time.perf_counter() - start)
"""

FORK_WORKLOAD = """
import subprocess, time
start = time.perf_counter()
for _ in range({n}):
    subprocess.run(["/bin/true"])
print(time.perf_counter() - start)
"""


def timed(workload: str, n: int) -> float:
    return float(subprocess.run([sys.executable, "-c", workload.format(n=n)], capture_output=True, text=True,
                                check=True).stdout)


def pipe_rw(n: int) -> float:
    """n small (64-byte) write+read round trips on a pipe, in seconds."""
    return timed(PIPE_WORKLOAD, n)


def fork_exec(n: int) -> float:
    """n fork+exec+wait of /bin/true, in seconds."""
    return timed(FORK_WORKLOAD, n)
