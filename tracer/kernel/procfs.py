"""Reading /proc: a process's start time, and whether a pid is still the
process it was.

Pids get reused (pid_max can be as low as 32768), so anything read by pid
after the fact (a namespace, a cgroup, a working directory) is only
trusted when the pid still names the process whose start time we know.
"""

from __future__ import annotations

import os
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# /proc gives a process's start time in clock ticks; the kernel's events
# give nanoseconds.  A snapshot within this distance is the same process.
SNAPSHOT_START_TOLERANCE_NS = 20_000_000


def _monotonic_minus_boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def proc_start_ns(stat_fields: list[str]) -> int:
    """/proc/PID/stat's start time (boot-time clock ticks) as monotonic ns."""
    ticks = int(stat_fields[19])  # field 22, counted after the comm
    return ticks * 1_000_000_000 // CLOCK_TICKS + _monotonic_minus_boottime_ns()


def read_stat(pid: int | str) -> tuple[str, list[str]]:
    """(comm, the fields after it) of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    return comm, raw[raw.rindex(")") + 2:].split()


def same_process(pid: int, start_ns: int) -> bool:
    """Whether `pid` still names the process that started at `start_ns`
    (monotonic; /proc has clock-tick precision).  Checked *after* reading
    something by pid, it proves the read was of that process: the process
    existed then, so the pid was not yet free for another."""
    try:
        _, fields = read_stat(pid)
        return abs(proc_start_ns(fields) - start_ns) <= SNAPSHOT_START_TOLERANCE_NS
    except (OSError, ValueError, IndexError):
        return False
