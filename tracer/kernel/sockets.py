"""Finding CRI connections that already exist when tracing begins.

kubelet opens its connection to the runtime once and keeps it, so the
connect(2)/accept(2) that the BPF programs watch for happened long ago.
The kernel still knows every unix socket, its bound path and its peer
(sock_diag, read with tracer/kernel/netlink.py), and /proc says which process holds
which socket.  From that we seed the in-kernel maps and record one
snapshot event per existing endpoint.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

TCP_ESTABLISHED = 1
_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")


def normalize_socket_path(path: str) -> str:
    """One spelling per path: "unix:///run/x.sock" and "//run/x.sock" are "/run/x.sock"."""
    path = path.removeprefix("unix://")
    if path.startswith("/"):
        path = "/" + path.lstrip("/")
    return path


def path_variants(path: str) -> list[str]:
    """The spellings a client may connect with: /var/run is /run on modern systems."""
    path = normalize_socket_path(path)
    variants = [path]
    if path.startswith("/run/"):
        variants.append("/var" + path)
    elif path.startswith("/var/run/"):
        variants.append(path.removeprefix("/var"))
    return variants


@dataclass(frozen=True)
class UnixSocket:
    inode: int
    peer_inode: int
    path: str
    state: int


@dataclass(frozen=True)
class HeldSocket:
    """A CRI socket end a process held when tracing began (sock_diag + /proc/*/fd)."""

    inode: int
    peer_inode: int
    side: str            # "client" or "server"
    path: str
    pid: int
    fd: int


def unix_sockets() -> list[UnixSocket]:
    from tracer.kernel.netlink import (
        unix_sockets as diag_unix_sockets,  # netlink sock_diag
    )

    return [UnixSocket(inode, peer, normalize_socket_path(name), state)
            for inode, peer, name, state in diag_unix_sockets()]


def socket_holders(inodes: set[int]) -> dict[int, tuple[int, int]]:
    """socket inode → (pid, fd) of a process holding it, for the given inodes."""
    holders: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                match = _SOCKET_LINK.match(os.readlink(f"/proc/{entry}/fd/{fd}"))
            except OSError:
                continue
            if match and int(match.group(1)) in inodes:
                holders.setdefault(int(match.group(1)), (int(entry), int(fd)))
    return holders


def socket_inodes_of(pid: int) -> set[int] | None:
    """The socket inodes a process holds now (empty when it is gone); None
    when its fd table cannot be read (no permission)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return None
    except OSError:
        return set()  # gone (or a zombie: its fds are closed)
    held = set()
    for fd in fds:
        try:
            match = _SOCKET_LINK.match(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if match:
            held.add(int(match.group(1)))
    return held


def _wanted(paths: list[str]) -> set[str]:
    return {variant for path in paths for variant in path_variants(path)}


def scan_cri_sockets(paths: list[str]) -> list[HeldSocket]:
    """Every open endpoint of a connection to one of the runtime sockets.

    A server end is an accepted socket that carries the listener's path; its
    peer is the client end, which has no path of its own.  (Listening
    sockets need no scan: the BPF side reads the path a socket is bound to
    when it accepts.)
    """
    wanted = _wanted(paths)
    sockets = unix_sockets()
    servers = [s for s in sockets if s.path in wanted and s.state == TCP_ESTABLISHED]
    inodes = {s.inode for s in servers} | {s.peer_inode for s in servers if s.peer_inode}
    holders = socket_holders(inodes)
    endpoints = []
    for server in servers:
        if server.inode in holders:
            pid, fd = holders[server.inode]
            endpoints.append(HeldSocket(server.inode, server.peer_inode, "server", server.path, pid, fd))
        if server.peer_inode in holders:
            pid, fd = holders[server.peer_inode]
            endpoints.append(HeldSocket(server.peer_inode, server.inode, "client", server.path, pid, fd))
    return endpoints
