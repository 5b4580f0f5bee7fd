"""Where the cgroup hierarchies are mounted, and cgroup ids from /proc.

A cgroup's id is the inode number of its directory (kernfs), which is what
bpf_get_current_cgroup_id() and the cgroup tracepoints report.
"""

from __future__ import annotations

import functools
import os

from tracer.kernel import CgroupLayout, cgroup_layout


@functools.cache
def _layout() -> CgroupLayout:
    return cgroup_layout()


def cgroup2_mount() -> str | None:
    return _layout().v2


def v1_mount(controller: str) -> str | None:
    return next((m.mountpoint for m in _layout().v1 if controller in m.options), None)


def _cgroup_path(pid: int | str, controller: str | None) -> str | None:
    """The process's path in the v2 hierarchy (None) or a v1 controller's."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if controller is None and hierarchy == "0":
                return path
            if controller is not None and controller in controllers.split(","):
                return path
    return None


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
