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


# ---- a real server and its own load generator (issue #13) ------------------------------------------

# Debian's redis-tools ships the key-value server (redis-check-rdb is the server's binary: redis picks
# its role from argv[0]) and its benchmark client, without the redis-server package's system service.
REDIS_BINARY = "/usr/bin/redis-check-rdb"
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"


class KeyValueServer:
    """redis on a loopback port, for as long as the benchmark runs; `run_load()` drives it with
    redis-benchmark (many small requests over TCP: every request is a socket read and write on
    each side, the traffic the socket tracepoints see)."""

    def __init__(self, port: int = 16379, requests: int = 100_000, clients: int = 20) -> None:
        self.port, self.requests, self.clients = port, requests, clients
        self.process: subprocess.Popen | None = None

    def start(self) -> "KeyValueServer":
        import shutil
        import socket
        import time

        if not (shutil.which(REDIS_BENCHMARK) and shutil.which(REDIS_BINARY)):
            raise FileNotFoundError("redis-tools is not installed (scripts/install.sh installs it)")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "yes"], executable=REDIS_BINARY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis did not start")
                time.sleep(0.05)

    def run_load(self) -> float:
        """`requests` SETs then as many GETs from `clients` connections; the seconds they took
        (requests / throughput, as redis-benchmark measured each)."""
        out = subprocess.run([REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(self.port), "-n", str(self.requests),
                              "-c", str(self.clients), "-t", "set,get", "-q", "--csv"],
                             capture_output=True, text=True, check=True).stdout
        rates = [float(line.split(",")[1].strip('"')) for line in out.strip().splitlines()[1:]]
        return sum(self.requests / rate for rate in rates)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None
