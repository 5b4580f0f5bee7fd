"""The host state a test bed run changes, and putting it back afterwards.

containerd, runc and the CNI plugins leave traces outside the test bed's
directory: the bridge plugin creates a bridge and turns on IPv4 forwarding,
runc creates pod cgroups that kubelet would normally remove, the shim keeps
its sockets under /run/containerd and libcni caches results under
/var/lib/cni. A HostBaseline records how these looked before the first start
and is saved to disk, so that even a later run can restore the host after a
crash.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute

log = logging.getLogger(__name__)

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CGROUP_ROOT = Path("/sys/fs/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")

# Directories outside the test bed's own that containerd's shim and libcni
# create on first use and never remove.
SHARED_RUNTIME_DIRS = (Path("/run/containerd"), Path("/var/lib/cni"))

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class HostBaseline:
    """How the host looked before the test bed first changed it."""

    ip_forward: str
    bridge_existed: bool
    existing_dirs: list[str]

    @classmethod
    def capture(cls, bridge: str, watched_dirs: list[Path]) -> HostBaseline:
        return cls(
            ip_forward=IP_FORWARD.read_text().strip(),
            bridge_existed=link_exists(bridge),
            existing_dirs=[str(path) for path in watched_dirs if path.exists()],
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> HostBaseline:
        return cls(**json.loads(path.read_text()))


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def delete_link(name: str) -> None:
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            ipr.link("del", index=index)


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, v2)."""
    return sorted(path for path in CGROUP_ROOT.iterdir() if path.is_dir() and not path.is_symlink())


def watched_dirs(cgroup_parent: str) -> list[Path]:
    """Directories whose creation by a run must be undone afterwards.

    ``cgroup_parent`` is the cgroup under which pod cgroups are made, e.g.
    "kubepods/besteffort"; each of its levels counts, in every hierarchy.
    """
    parts = Path(cgroup_parent.lstrip("/")).parts
    cgroup_dirs = [
        hierarchy.joinpath(*parts[:depth]) for hierarchy in cgroup_hierarchies() for depth in range(1, len(parts) + 1)
    ]
    return [*SHARED_RUNTIME_DIRS, *cgroup_dirs]


def restore(baseline: HostBaseline, bridge: str, cgroup_parent: str) -> None:
    """Undo what the run changed, as far as nothing else still uses it."""
    IP_FORWARD.write_text(baseline.ip_forward)
    if not baseline.bridge_existed:
        delete_link(bridge)
    for path in reversed(watched_dirs(cgroup_parent)):  # deepest cgroups first
        if str(path) in baseline.existing_dirs or not path.exists():
            continue
        if path.is_relative_to(CGROUP_ROOT):
            remove_cgroup(path)
        else:
            remove_empty_dirs(path)


def remove_empty_dirs(root: Path) -> None:
    """Remove ``root`` and its subdirectories, bottom-up, where they are empty.

    A directory that still holds a file is someone's state and stays.
    """
    for directory, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.ENOENT):
                raise


def remove_cgroup(path: Path) -> bool:
    """rmdir one cgroup; False if it still has processes or children."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as error:
        if error.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise
        log.warning("cgroup %s is still in use, left in place", path)
        return False
    return True


def remove_pod_cgroups(pod_cgroup_parents: list[str]) -> None:
    """Remove the empty cgroups runc left for these pods, in every hierarchy.

    runc removes a container's own cgroup but not the pod level above it,
    which kubelet normally cleans up.
    """
    for hierarchy in cgroup_hierarchies():
        for parent in pod_cgroup_parents:
            pod_dir = hierarchy / parent.lstrip("/")
            if not pod_dir.is_dir():
                continue
            for container_dir in (child for child in pod_dir.iterdir() if child.is_dir()):
                remove_cgroup(container_dir)
            remove_cgroup(pod_dir)


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040).
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points below ``directory``, in the order they were mounted."""
    prefix = str(directory).rstrip("/") + "/"
    points = [_unescape_mountinfo(line.split()[4]) for line in MOUNTINFO.read_text().splitlines()]
    return [Path(point) for point in points if point.startswith(prefix)]


def unmount_all_under(directory: Path) -> list[Path]:
    """Unmount everything below ``directory``, newest first; return the mount points."""
    points = mounts_under(directory)
    for point in reversed(points):
        _unmount(point)
    return points


def _unmount(point: Path) -> None:
    if _libc.umount2(os.fsencode(point), 0) == 0:
        return
    failure = ctypes.get_errno()
    if failure == errno.EINVAL:  # no longer a mount point: went with its parent
        return
    if failure == errno.EBUSY:  # still in use; detach so the directory is free
        log.warning("%s is busy, detaching it", point)
        if _libc.umount2(os.fsencode(point), _MNT_DETACH) == 0:
            return
        failure = ctypes.get_errno()
    raise OSError(failure, os.strerror(failure), str(point))
