"""Just enough netlink for the tracer's two questions, with the socket
module alone (no helper process, no event loop):

- rtnetlink: a network namespace's links, addresses and routes.  The
  caller enters the namespace in a short-lived thread (setns affects only
  that thread) and opens the socket there; the socket keeps talking to
  that namespace.
- sock_diag: every unix socket, its bound name and its peer.

`parse_messages` is pure: the unit tests feed it bytes.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER = 0x1, 0x4
UNIX_DIAG_NAME, UNIX_DIAG_PEER = 0, 2
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_GETLINK, RTM_NEWLINK = 18, 16
RTM_GETADDR, RTM_NEWADDR = 22, 20
RTM_GETROUTE, RTM_NEWROUTE = 26, 24
IFLA_IFNAME, IFLA_MTU, IFLA_OPERSTATE = 3, 4, 16
IFA_ADDRESS = 1
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
# Not a family: the kernel then dumps the routes of every family.
ALL_FAMILIES = 255
CLONE_NEWNET = 0x40000000
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

NLMSGHDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
IFADDRMSG = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
RTATTR = struct.Struct("=HH")
UNIX_DIAG_REQ = struct.Struct("=BBxxIIIII")  # family, protocol, states, ino, show, cookie[2]
UNIX_DIAG_MSG = struct.Struct("=BBBxIII")    # family, type, state, ino, cookie[2]


class NetlinkError(OSError):
    pass


@dataclass(frozen=True)
class Message:
    type: int
    header: tuple          # the family-specific header, unpacked
    attrs: dict[int, bytes]


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_attrs(data: bytes, offset: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        attrs.setdefault(kind & 0x3FFF, data[offset + RTATTR.size:offset + length])
        offset += _align(length)
    return attrs


def parse_messages(data: bytes, headers: dict[int, struct.Struct]) -> tuple[list[Message], bool]:
    """The messages of one recv() of a dump, and whether the dump is done."""
    messages, offset = [], 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise NetlinkError(0, f"malformed netlink message of {length} bytes")
        body = data[offset + NLMSGHDR.size:offset + length]
        if kind == NLMSG_DONE:
            return messages, True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", body)
            if error:
                raise NetlinkError(-error, os.strerror(-error))
        elif kind in headers:
            fixed = headers[kind]
            messages.append(Message(kind, fixed.unpack_from(body), parse_attrs(body, fixed.size)))
        offset += _align(length)
    return messages, False


def dump(sock: socket.socket, request: int, header: bytes, reply: int, reply_header: struct.Struct,
         seq: int, flags: int = NLM_F_REQUEST | NLM_F_DUMP) -> list[Message]:
    sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(header), request, flags, seq, 0) + header)
    found: list[Message] = []
    while True:
        messages, done = parse_messages(sock.recv(1 << 16), {reply: reply_header})
        found += messages
        if done:
            return found


def _string(raw: bytes | None) -> str | None:
    return None if raw is None else raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(raw: bytes | None) -> int | None:
    return None if raw is None or len(raw) < 4 else struct.unpack_from("=I", raw)[0]


def _address(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    family = {4: socket.AF_INET, 16: socket.AF_INET6}.get(len(raw))
    return socket.inet_ntop(family, raw) if family else raw.hex()


def describe(sock: socket.socket) -> dict:
    """Interfaces, addresses and routes (main table) of the socket's namespace,
    worded as `ip` would: "eth0 UP mtu 1500", "eth0 10.1.0.5/24", "default via 10.1.0.1 dev eth0"."""
    names: dict[int, str | None] = {}
    interfaces = []
    for link in dump(sock, RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), RTM_NEWLINK, IFINFOMSG, 1):
        name = _string(link.attrs.get(IFLA_IFNAME))
        names[link.header[2]] = name
        state_raw = link.attrs.get(IFLA_OPERSTATE)
        state = None if not state_raw else (OPERSTATES[state_raw[0]] if state_raw[0] < len(OPERSTATES) else state_raw[0])
        interfaces.append(f"{name} {state or ''} mtu {_u32(link.attrs.get(IFLA_MTU))}".strip())
    addresses = [f"{names.get(a.header[4], a.header[4])} {_address(a.attrs.get(IFA_ADDRESS))}/{a.header[1]}"
                 for a in dump(sock, RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), RTM_NEWADDR,
                               IFADDRMSG, 2)]
    routes = []
    for route in dump(sock, RTM_GETROUTE, RTMSG.pack(ALL_FAMILIES, 0, 0, 0, 0, 0, 0, 0, 0), RTM_NEWROUTE, RTMSG, 3):
        if route.header[4] != 254:  # rtm_table: the main table only
            continue
        dst = _address(route.attrs.get(RTA_DST))
        dst = f"{dst}/{route.header[1]}" if dst else "default"
        via = _address(route.attrs.get(RTA_GATEWAY))
        dev = names.get(_u32(route.attrs.get(RTA_OIF)), "")
        routes.append(f"{dst}{' via ' + via if via else ''} dev {dev}")
    return {"interfaces": interfaces, "addresses": addresses, "routes": routes}


def in_namespace(path: str, work: Callable[[socket.socket], dict]) -> dict:
    """Runs `work` on a netlink socket opened in the network namespace at
    `path` (e.g. /proc/PID/ns/net), from a thread of its own that enters it."""
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: dict = {}

    def enter_and_work() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
            finally:
                os.close(fd)
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as sock:
                sock.bind((0, 0))
                outcome["result"] = work(sock)
        except Exception as error:  # re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=enter_and_work, name="tracer-netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def namespace_contents(path: str) -> dict:
    return in_namespace(path, describe)


def unix_sockets() -> list[tuple[int, int, str, int]]:
    """Every unix socket of our network namespace: (inode, peer inode or 0,
    bound path or "", state)."""
    request = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_NAME | UDIAG_SHOW_PEER, 0, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as sock:
        sock.bind((0, 0))
        messages = dump(sock, SOCK_DIAG_BY_FAMILY, request, SOCK_DIAG_BY_FAMILY, UNIX_DIAG_MSG, 1)
    # the name as a C string: a path up to its NUL; an abstract name (a NUL first) is empty
    return [(m.header[3], _u32(m.attrs.get(UNIX_DIAG_PEER)) or 0, _string(m.attrs.get(UNIX_DIAG_NAME, b"")),
             m.header[2]) for m in messages]
