"""Where the cgroup hierarchies are mounted, and cgroup ids from /proc.

A cgroup's id is the inode number of its directory (kernfs), which is what
bpf_get_current_cgroup_id() and the cgroup tracepoints report.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Mount:
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]


def mounts() -> list[_Mount]:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, mountpoint, fstype, options = line.split()[:4]
        # /proc/mounts escapes blanks and backslashes as octal (\040).
        mountpoint = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mountpoint)
        mounts.append(_Mount(device, mountpoint, fstype, tuple(options.split(","))))
    return mounts


@dataclass(frozen=True)
class CgroupMount:
    mountpoint: str
    options: tuple[str, ...]  # for v1 these include the controllers, e.g. "memory"


@dataclass(frozen=True)
class CgroupLayout:
    mode: str  # "hybrid" (v1 + v2), "unified" (v2 only), "legacy" (v1 only) or "none"
    v1: tuple[CgroupMount, ...]
    v2: str | None  # cgroup2 mount point

    def describe(self) -> str:
        parts = [self.mode]
        if self.v1:
            parts.append("v1 at " + ", ".join(m.mountpoint for m in self.v1))
        if self.v2:
            parts.append(f"v2 at {self.v2}")
        return "; ".join(parts)


def cgroup_layout() -> CgroupLayout:
    found = mounts()
    v1 = tuple(CgroupMount(m.mountpoint, m.options) for m in found if m.fstype == "cgroup")
    v2 = next((m.mountpoint for m in found if m.fstype == "cgroup2"), None)
    mode = {(True, True): "hybrid", (False, True): "unified", (True, False): "legacy"}.get(
        (bool(v1), v2 is not None), "none"
    )
    return CgroupLayout(mode, v1, v2)


@functools.cache
def _layout() -> CgroupLayout:
    return cgroup_layout()


def cgroup2_mount() -> str | None:
    return _layout().v2


def v1_mount(controller: str) -> str | None:
    return next((m.mountpoint for m in _layout().v1 if controller in m.options), None)


def _cgroup_paths(pid: int | str) -> dict[str | None, str]:
    """The process's path in the v2 hierarchy (key None) and in each v1
    controller's (one read of /proc/<pid>/cgroup)."""
    paths: dict[str | None, str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy == "0":
                paths.setdefault(None, path)
            for controller in controllers.split(","):
                if controller:
                    paths.setdefault(controller, path)
    return paths


def _cgroup_path(pid: int | str, controller: str | None) -> str | None:
    """The process's path in the v2 hierarchy (None) or a v1 controller's."""
    return _cgroup_paths(pid).get(controller)


def cgroup_id(pid: int | str, controller: str | None = None) -> int:
    """The cgroup id of a process in cgroup v2 (controller None) or a v1 controller; 0 if none."""
    mount = cgroup2_mount() if controller is None else v1_mount(controller)
    try:
        path = _cgroup_path(pid, controller)
        if mount is None or path is None:
            return 0
        return os.stat(mount + path).st_ino
    except OSError:
        return 0


def _key_values(path: str) -> dict[str, int]:
    """A flat-keyed cgroup file ("nr_throttled 3" per line) as ints."""
    values = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
    return values


def _pressure_totals(path: str) -> dict[str, int]:
    """A PSI file's total stall time in microseconds, by line ("some", "full")."""
    totals = {}
    with open(path) as f:
        for line in f:
            kind, *fields = line.split()
            for field in fields:
                if field.startswith("total="):
                    totals[kind] = int(field.removeprefix("total="))
    return totals


def start_pressure(pid: int) -> dict[str, int]:
    """CPU throttling and memory pressure of the process's cgroup so far:
    for a container's entrypoint, what its start went through.  Reads what
    this node has (cgroup v2 files, v1 cpu and memory controllers, PSI);
    absent files are left out."""
    stats: dict[str, int] = {}

    def read(reader, path: str) -> dict[str, int]:
        try:
            return reader(path)
        except (OSError, ValueError):
            return {}

    try:
        paths = _cgroup_paths(pid)
    except (OSError, ValueError):
        paths = {}
    v2, v2_path = cgroup2_mount(), paths.get(None)
    if v2 and v2_path is not None:
        base = v2 + v2_path
        cpu = read(_key_values, f"{base}/cpu.stat")
        if "nr_throttled" in cpu:
            stats.update(cpu_periods=cpu.get("nr_periods", 0), cpu_throttled=cpu["nr_throttled"],
                         cpu_throttled_usec=cpu.get("throttled_usec", 0))
        events = read(_key_values, f"{base}/memory.events")
        if events:
            stats.update(memory_limit_hits=events.get("max", 0), memory_oom_kills=events.get("oom_kill", 0))
        peak = read(lambda p: {"peak": int(open(p).read())}, f"{base}/memory.peak")
        if peak:
            stats["memory_peak_bytes"] = peak["peak"]
        for resource in ("cpu", "memory", "io"):
            for kind, total in read(_pressure_totals, f"{base}/{resource}.pressure").items():
                stats[f"{resource}_pressure_{kind}_usec"] = total
    cpu_mount, cpu_path = v1_mount("cpu"), paths.get("cpu")
    if cpu_mount and cpu_path is not None and "cpu_throttled" not in stats:
        cpu = read(_key_values, f"{cpu_mount}{cpu_path}/cpu.stat")
        if "nr_throttled" in cpu:
            stats.update(cpu_periods=cpu.get("nr_periods", 0), cpu_throttled=cpu["nr_throttled"],
                         cpu_throttled_usec=cpu.get("throttled_time", 0) // 1000)
    memory_mount, memory_path = v1_mount("memory"), paths.get("memory")
    if memory_mount and memory_path is not None and "memory_peak_bytes" not in stats:
        base = f"{memory_mount}{memory_path}"
        peak = read(lambda p: {"peak": int(open(p).read())}, f"{base}/memory.max_usage_in_bytes")
        if peak:
            stats["memory_peak_bytes"] = peak["peak"]
        hits = read(lambda p: {"hits": int(open(p).read())}, f"{base}/memory.failcnt")
        if hits:
            stats["memory_limit_hits"] = hits["hits"]
        oom = read(_key_values, f"{base}/memory.oom_control")
        if "oom_kill" in oom:
            stats["memory_oom_kills"] = oom["oom_kill"]
    return stats
