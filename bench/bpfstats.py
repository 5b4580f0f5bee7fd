"""Run time of BPF programs, as the kernel counts it (kernel.bpf_stats_enabled).

`run_stats()` turns the counting on for as long as it is held (BPF_ENABLE_STATS:
an fd, so it ends with us even if we crash, and the global sysctl is left
alone).  `program_stats(pid)` reads, for every BPF program a process holds,
its name, run count and total run time, from /proc/<pid>/fdinfo and
BPF_OBJ_GET_INFO_BY_FD: no bpftool needed.

The counting itself costs two clock reads per run, which show in every
program's average; an empty program's average (bench.floor) is that cost.
"""

from __future__ import annotations

import ctypes
import os
import re
from contextlib import contextmanager
from collections.abc import Iterator

SYS_BPF = 321  # x86-64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
PROG_INFO_SIZE = 256      # more than the fields read below; the kernel fills what it knows
PROG_INFO_NAME = slice(64, 80)  # struct bpf_prog_info.name, char[16]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    result = _libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_long(cmd), attr, ctypes.c_uint(ctypes.sizeof(attr)))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


@contextmanager
def run_stats() -> Iterator[None]:
    attr = (ctypes.c_uint32 * 1)(BPF_STATS_RUN_TIME)
    fd = _bpf(BPF_ENABLE_STATS, attr)
    try:
        yield
    finally:
        os.close(fd)


def _program_name(prog_id: int) -> str:
    attr = (ctypes.c_uint32 * 3)(prog_id, 0, 0)
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    except OSError:
        return f"id {prog_id}"
    try:
        info = ctypes.create_string_buffer(PROG_INFO_SIZE)
        info_attr = (ctypes.c_uint32 * 4)(fd, PROG_INFO_SIZE, 0, 0)
        ctypes.c_uint64.from_buffer(info_attr, 8).value = ctypes.addressof(info)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, info_attr)
        return info.raw[PROG_INFO_NAME].split(b"\0", 1)[0].decode(errors="replace") or f"id {prog_id}"
    finally:
        os.close(fd)


def program_stats(pid: int) -> dict[str, dict[str, int]]:
    """name → {"run_cnt", "run_time_ns"} for every BPF program `pid` holds.

    A program attached to a raw tracepoint is named after it (from its
    link's fdinfo); others by their kernel name, which keeps 15 characters."""
    programs: dict[int, dict[str, int]] = {}
    attached_to: dict[int, str] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            kind = os.readlink(f"/proc/{pid}/fd/{fd}")
            if kind not in ("anon_inode:bpf-prog", "anon_inode:bpf_link"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(re.findall(r"^(\w+):\s+(\S+)", f.read(), re.MULTILINE))
        except OSError:
            continue
        prog_id = int(info.get("prog_id", 0))
        if kind == "anon_inode:bpf_link":
            if "tp_name" in info:
                attached_to[prog_id] = info["tp_name"]
            continue
        programs[prog_id] = {"run_cnt": int(info.get("run_cnt", 0)), "run_time_ns": int(info.get("run_time_ns", 0))}
    found: dict[str, dict[str, int]] = {}
    for prog_id, stats in programs.items():
        name = attached_to.get(prog_id) or _program_name(prog_id)
        found[name if name not in found else f"{name} (id {prog_id})"] = stats
    return found


def difference(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Per program, what ran between two readings, with the average in ns."""
    result = {}
    for name, now in sorted(after.items()):
        then = before.get(name, {"run_cnt": 0, "run_time_ns": 0})
        count, time_ns = now["run_cnt"] - then["run_cnt"], now["run_time_ns"] - then["run_time_ns"]
        result[name] = {"run_cnt": count, "run_time_ns": time_ns,
                        "avg_ns": round(time_ns / count, 1) if count else None}
    return result
