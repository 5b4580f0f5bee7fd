"""tracer/kernel/netlink.py: the rtnetlink reader that replaced a pyroute2 helper
process per pod (tracer/enrich.read_netns)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from tracer.kernel import netlink
from tracer.kernel.netlink import (
    IFINFOMSG,
    NLMSGHDR,
    RTATTR,
    NetlinkError,
    describe,
    parse_messages,
)


def attr(kind: int, payload: bytes) -> bytes:
    raw = RTATTR.pack(RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, body: bytes) -> bytes:
    raw = NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, 0, 1, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def test_link_messages_and_the_end_of_a_dump() -> None:
    link = IFINFOMSG.pack(0, 1, 7, 0, 0) + attr(netlink.IFLA_IFNAME, b"eth0\0") + attr(netlink.IFLA_MTU,
                                                                                      struct.pack("=I", 1500))
    data = message(netlink.RTM_NEWLINK, link) + message(netlink.NLMSG_DONE, struct.pack("=i", 0))
    messages, done = parse_messages(data, {netlink.RTM_NEWLINK: IFINFOMSG})
    assert done
    assert [m.header[2] for m in messages] == [7]
    assert messages[0].attrs[netlink.IFLA_IFNAME] == b"eth0\0"
    assert struct.unpack("=I", messages[0].attrs[netlink.IFLA_MTU]) == (1500,)


def test_a_dump_goes_on_until_done() -> None:
    link = IFINFOMSG.pack(0, 1, 1, 0, 0)
    messages, done = parse_messages(message(netlink.RTM_NEWLINK, link), {netlink.RTM_NEWLINK: IFINFOMSG})
    assert len(messages) == 1 and not done


def test_errors_and_malformed_messages_raise() -> None:
    with pytest.raises(NetlinkError):
        parse_messages(message(netlink.NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16), {})
    with pytest.raises(NetlinkError):
        parse_messages(NLMSGHDR.pack(400, netlink.RTM_NEWLINK, 0, 1, 0), {})


def test_own_namespace_reads_like_pyroute2() -> None:
    """The same words as the pyroute2 reader had, on this machine's namespace."""
    pyroute2 = pytest.importorskip("pyroute2")
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        ours = describe(sock)
    with pyroute2.IPRoute() as ns:
        names = {}
        interfaces = []
        for link in ns.get_links():
            name = link.get_attr("IFLA_IFNAME")
            names[link["index"]] = name
            interfaces.append(f"{name} {link.get_attr('IFLA_OPERSTATE') or ''} mtu {link.get_attr('IFLA_MTU')}".strip())
        addresses = [f"{names.get(a['index'], a['index'])} {a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                     for a in ns.get_addr()]
        routes = []
        for route in ns.get_routes(table=254):
            dst = route.get_attr("RTA_DST")
            dst = f"{dst}/{route['dst_len']}" if dst else "default"
            via = route.get_attr("RTA_GATEWAY")
            routes.append(f"{dst}{' via ' + via if via else ''} dev {names.get(route.get_attr('RTA_OIF'), '')}")
    assert ours == {"interfaces": interfaces, "addresses": addresses, "routes": routes}
    assert any(i.startswith("lo ") for i in ours["interfaces"])


@pytest.mark.skipif(os.geteuid() != 0, reason="entering a namespace needs CAP_SYS_ADMIN")
def test_entering_our_own_namespace_leaves_the_caller_where_it_was() -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    contents = netlink.namespace_contents("/proc/self/ns/net")
    assert any(i.startswith("lo ") for i in contents["interfaces"])
    assert os.readlink("/proc/thread-self/ns/net") == before


def test_a_missing_namespace_raises_in_the_caller() -> None:
    with pytest.raises(OSError):
        netlink.namespace_contents("/proc/0/ns/net")


def test_unix_sockets_read_like_pyroute2() -> None:
    """tracer/kernel/sockets.py's sock_diag reader gives what pyroute2's DiagSocket gave."""
    pyroute2 = pytest.importorskip("pyroute2")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = f"/tmp/tracer-netlink-test-{os.getpid()}.sock"
    try:
        listener.bind(path)
        listener.listen()
        ours = {inode: (peer, name, state) for inode, peer, name, state in netlink.unix_sockets()}
        with pyroute2.DiagSocket() as diag:
            diag.bind()
            theirs = {}
            for message in diag.get_sock_stats(family=socket.AF_UNIX, states=0xFFFFFFFF, show=0x1 | 0x4):
                attrs = dict(message["attrs"])
                theirs[message["udiag_ino"]] = (attrs.get("UNIX_DIAG_PEER", 0), attrs.get("UNIX_DIAG_NAME", "") or "",
                                                message["udiag_state"])
        common = ours.keys() & theirs.keys()  # sockets come and go between the two dumps
        assert len(common) >= len(ours) - 2
        assert {k: ours[k] for k in common} == {k: theirs[k] for k in common}
        assert any(name == path for _, name, _ in ours.values())
    finally:
        listener.close()
        os.unlink(path)
