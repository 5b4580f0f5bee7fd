"""Kernel events: the one Python mirror of bpf/events.h, and decode().

decode(raw) turns the bytes of one ring-buffer record into a typed event.
It is pure (no bcc) so that tests and `tracer replay` feed it recorded
bytes.  Values stay raw (flags, exit codes, monotonic nanoseconds); the
formatter in tracer/format.py is the one place that makes them readable.

Userspace also makes events of the same shape (EVENT_PROC_SNAPSHOT for
processes that existed before tracing began) with the encode_* functions,
so that a recording holds everything needed to rebuild the traces.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum

from tracer.redaction import DEFAULT_REDACTION, ArgvRedaction

EVENT_ABI_VERSION = 1

TASK_COMM_LEN = 16
FILENAME_MAX_LEN = 256
ARGV_MAX_LEN = 4096
ENV_MAX_LEN = 8192
PATH_MAX_LEN = 256
FSTYPE_MAX_LEN = 32
CGROUP_PATH_MAX_LEN = 512
CGROUP_NAME_LEN = 128
CGROUP_NAME_DEPTH = 4
CGROUP_WRITE_DATA_LEN = 128
SOCKET_SEGMENT_LEN = 8192
SOCKET_PATH_LEN = 108

EXEC_FLAG_ARGV_TRUNCATED = 0x1
EXEC_FLAG_ENV_CAPTURED = 0x2
EXEC_FLAG_ENV_TRUNCATED = 0x4
EXEC_FLAG_ENV_FILTERED = 0x8
# A runtime worker that ran while the syscall program was detached, and may
# have made syscalls that were not seen (bpf/arming.h); on its exec or exit.
EXEC_FLAG_UNWATCHED = 0x10
EXIT_FLAG_UNWATCHED = 0x1
# Why, in either event's flags from this bit on (UNWATCHED_* of bpf/events.h;
# tracer.format.unwatched_cause_names names them).
UNWATCHED_CAUSE_SHIFT = 8
UNWATCHED_CAUSE_MASK = 0x3F

# Environment keys of a CNI plugin that name its pod.  Everything else in a
# plugin's environment is containerd's own environment and may hold secrets:
# it is dropped before the event is stored anywhere (see sanitize()).
CNI_ENV_KEYS = frozenset({"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"})
CNI_ARGS_KEYS = frozenset(
    {"K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID", "IgnoreUnknown"}
)


class EventType(IntEnum):
    FORK = 1
    EXEC = 2
    EXIT = 3
    NAMESPACE = 4
    MOUNT = 5
    PIVOT_ROOT = 6
    CGROUP_MKDIR = 7
    CGROUP_ATTACH = 8
    CGROUP_WRITE = 9
    SOCKET_OPEN = 10
    SOCKET_DATA = 11
    SOCKET_CLOSE = 12
    EXEC_FAILED = 13
    OOM_KILL = 14
    PROC_SNAPSHOT = 64
    SOCKET_SNAPSHOT = 65


EVENT_TYPE_MAX = 128
EVENT_TYPES = {t.value: t for t in EventType}   # faster than EventType(value)


class NamespaceSyscall(IntEnum):
    UNSHARE = 1
    SETNS = 2


class SocketSide(IntEnum):
    CLIENT = 1
    SERVER = 2


class SocketDirection(IntEnum):
    OUT = 1  # written by this endpoint
    IN = 2   # read by this endpoint


SOCKET_FLAG_TRUNCATED = 0x1
SOCKET_FLAG_GAP_BEFORE = 0x2


class DecodeError(ValueError):
    """The bytes are not a well-formed event; the caller counts and drops them."""


# struct event_header
HEADER = struct.Struct("<HHIQIIIIQQQQ6I16s")
FORK_BODY = struct.Struct("<IIQQ")
EXEC_BODY = struct.Struct("<IHHHHI")
EXIT_BODY = struct.Struct("<II")
NAMESPACE_BODY = struct.Struct("<IiQq")
MOUNT_BODY = struct.Struct(f"<qQ{PATH_MAX_LEN}s{PATH_MAX_LEN}s{FSTYPE_MAX_LEN}s")
PIVOT_ROOT_BODY = struct.Struct(f"<q{PATH_MAX_LEN}s{PATH_MAX_LEN}s")
CGROUP_BODY = struct.Struct(f"<iiQIHH{CGROUP_PATH_MAX_LEN}s")
CGROUP_WRITE_BODY = struct.Struct(
    f"<QQIHH{CGROUP_NAME_LEN * CGROUP_NAME_DEPTH}s{CGROUP_WRITE_DATA_LEN}s"
)
SOCKET_ENDPOINT = struct.Struct("<QQIB3x")
SOCKET_OPEN_BODY = struct.Struct(f"<{SOCKET_ENDPOINT.size}s{TASK_COMM_LEN}s{SOCKET_PATH_LEN}s4x")
SOCKET_CLOSE_BODY = struct.Struct(f"<{SOCKET_ENDPOINT.size}s")
SOCKET_DATA_BODY = struct.Struct(f"<{SOCKET_ENDPOINT.size}sIIIBBH")
EXEC_DATA_MAX = FILENAME_MAX_LEN * 2 + ARGV_MAX_LEN + ENV_MAX_LEN
EXEC_FAILED_BODY = struct.Struct(f"<iHH{FILENAME_MAX_LEN}s")
OOM_KILL_BODY = struct.Struct(f"<IhHQQQQ{TASK_COMM_LEN}s")

# Sizes of the C structs, checked against the compiled program by
# tests/kernel/test_layout.py.
STRUCT_SIZES = {
    "event_header": HEADER.size,
    "fork_event": HEADER.size + FORK_BODY.size,
    "exec_event": HEADER.size + EXEC_BODY.size + EXEC_DATA_MAX,
    "exit_event": HEADER.size + EXIT_BODY.size,
    "namespace_event": HEADER.size + NAMESPACE_BODY.size,
    "mount_event": HEADER.size + MOUNT_BODY.size,
    "pivot_root_event": HEADER.size + PIVOT_ROOT_BODY.size,
    "cgroup_event": HEADER.size + CGROUP_BODY.size,
    "cgroup_write_event": HEADER.size + CGROUP_WRITE_BODY.size,
    "socket_open_event": HEADER.size + SOCKET_OPEN_BODY.size,
    "socket_close_event": HEADER.size + SOCKET_CLOSE_BODY.size,
    "socket_data_event": HEADER.size + SOCKET_DATA_BODY.size + 2 * SOCKET_SEGMENT_LEN,
    "exec_failed_event": HEADER.size + EXEC_FAILED_BODY.size,
    "oom_kill_event": HEADER.size + OOM_KILL_BODY.size,
}


@dataclass(frozen=True, slots=True)
class Namespaces:
    mnt: int = 0
    pid: int = 0
    net: int = 0
    uts: int = 0
    ipc: int = 0
    cgroup: int = 0


@dataclass(frozen=True, slots=True)
class Header:
    type: int
    size: int
    cpu: int
    ktime_ns: int
    pid: int
    tgid: int
    ppid: int
    start_ns: int
    parent_start_ns: int
    cgroup_id: int
    cgroup_v1_id: int
    ns: Namespaces
    comm: str

    @property
    def process_key(self) -> tuple[int, int]:
        """(tgid, start time): a process's identity; pids alone get reused."""
        return (self.tgid, self.start_ns)

    @property
    def parent_key(self) -> tuple[int, int]:
        return (self.ppid, self.parent_start_ns)


@dataclass(frozen=True, slots=True)
class ForkEvent:
    header: Header
    child_pid: int
    child_tgid: int
    child_start_ns: int
    clone_flags_raw: int

    @property
    def child_key(self) -> tuple[int, int]:
        return (self.child_tgid, self.child_start_ns)


@dataclass(frozen=True, slots=True)
class ExecEvent:
    """An exec, or (type PROC_SNAPSHOT) a process found running at start."""

    header: Header
    old_pid: int
    filename: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # CNI_* keys only
    flags_raw: int = 0

    @property
    def argv_truncated(self) -> bool:
        return bool(self.flags_raw & EXEC_FLAG_ARGV_TRUNCATED)

    @property
    def unwatched(self) -> bool:
        """The process ran unhooked before this exec (bpf/arming.h)."""
        return bool(self.flags_raw & EXEC_FLAG_UNWATCHED)

    @property
    def unwatched_causes_raw(self) -> int:
        return (self.flags_raw >> UNWATCHED_CAUSE_SHIFT) & UNWATCHED_CAUSE_MASK


@dataclass(frozen=True, slots=True)
class ExitEvent:
    header: Header
    exit_code_raw: int
    flags_raw: int = 0

    @property
    def unwatched(self) -> bool:
        return bool(self.flags_raw & EXIT_FLAG_UNWATCHED)

    @property
    def unwatched_causes_raw(self) -> int:
        return (self.flags_raw >> UNWATCHED_CAUSE_SHIFT) & UNWATCHED_CAUSE_MASK


@dataclass(frozen=True, slots=True)
class ExecFailedEvent:
    header: Header
    ret: int                          # -errno
    filename: str


@dataclass(frozen=True, slots=True)
class OomKillEvent:
    header: Header                    # the task whose allocation ran the OOM killer
    victim_pid: int
    victim_oom_score_adj: int
    total_vm_kb: int
    anon_rss_kb: int
    file_rss_kb: int
    shmem_rss_kb: int
    victim_comm: str


@dataclass(frozen=True, slots=True)
class NamespaceEvent:
    header: Header
    syscall: NamespaceSyscall
    fd: int
    flags_raw: int
    ret: int


@dataclass(frozen=True, slots=True)
class MountEvent:
    header: Header
    ret: int
    flags_raw: int
    source: str
    target: str
    fstype: str


@dataclass(frozen=True, slots=True)
class PivotRootEvent:
    header: Header
    ret: int
    new_root: str
    put_old: str


@dataclass(frozen=True, slots=True)
class CgroupEvent:
    """cgroup_mkdir or cgroup_attach_task (see header.type)."""

    header: Header
    hierarchy: int
    level: int
    cgroup_id: int
    target_pid: int
    path: str


@dataclass(frozen=True, slots=True)
class CgroupWriteEvent:
    header: Header
    fs_magic: int
    count: int
    fd: int
    names: tuple[str, ...]  # file, its directory, and upwards
    data: bytes

    @property
    def file_name(self) -> str:
        return self.names[0] if self.names else ""

    @property
    def relative_path(self) -> str:
        """The path as far as it was read: 'pod<uid>/<id>/memory.max'."""
        return "/".join(reversed([n for n in self.names if n and n != "/"]))


@dataclass(frozen=True, slots=True)
class SocketEndpoint:
    """One end of a CRI connection; `inode` identifies it, `peer_inode` the other end."""

    inode: int
    peer_inode: int
    fd: int
    side: SocketSide


@dataclass(frozen=True, slots=True)
class SocketOpenEvent:
    """connect/accept on a CRI socket, or (SOCKET_SNAPSHOT) one open before tracing."""

    header: Header
    endpoint: SocketEndpoint
    process_comm: str    # the process's name (header.comm is the thread's)
    path: str


@dataclass(frozen=True, slots=True)
class SocketCloseEvent:
    header: Header
    endpoint: SocketEndpoint


@dataclass(frozen=True, slots=True)
class SocketDataEvent:
    header: Header
    endpoint: SocketEndpoint
    direction: SocketDirection
    syscall_bytes: int   # bytes the whole syscall moved
    offset: int          # of this segment within them
    syscall: int
    flags_raw: int
    data: bytes


Event = (
    ForkEvent
    | ExecEvent
    | ExitEvent
    | ExecFailedEvent
    | OomKillEvent
    | NamespaceEvent
    | MountEvent
    | PivotRootEvent
    | CgroupEvent
    | CgroupWriteEvent
    | SocketOpenEvent
    | SocketCloseEvent
    | SocketDataEvent
)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _split_nul(raw: bytes) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0"))


# Every event decodes a header; the namespaces and the comm of a process
# repeat from one event to the next, so each distinct one is built once.
# (Both are immutable.)  Bounded: cleared when full.
_INTERNED_MAX = 4096
_namespaces: dict[tuple, Namespaces] = {}
_comms: dict[bytes, str] = {}


def decode_header(raw: bytes | memoryview) -> Header:
    if len(raw) < HEADER.size:
        raise DecodeError(f"event of {len(raw)} bytes is shorter than its header ({HEADER.size})")
    fields = HEADER.unpack_from(raw, 0)
    ns_key = fields[12:18]
    ns = _namespaces.get(ns_key)
    if ns is None:
        if len(_namespaces) >= _INTERNED_MAX:
            _namespaces.clear()
        ns = _namespaces[ns_key] = Namespaces(*ns_key)
    comm = _comms.get(fields[18])
    if comm is None:
        if len(_comms) >= _INTERNED_MAX:
            _comms.clear()
        comm = _comms[fields[18]] = _cstr(fields[18])
    # positional: type, size, cpu, ktime_ns, pid, tgid, ppid, start_ns,
    # parent_start_ns, cgroup_id, cgroup_v1_id (field 7 is padding)
    return Header(fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], fields[8],
                  fields[9], fields[10], fields[11], ns, comm)


def _body(raw: bytes | memoryview, body: struct.Struct, name: str) -> tuple:
    need = HEADER.size + body.size
    if len(raw) < need:
        raise DecodeError(f"{name} event truncated: {len(raw)} of {need} bytes")
    return body.unpack_from(raw, HEADER.size)


def parse_env(raw: bytes, truncated: bool) -> dict[str, str]:
    """Keeps only the CNI_* keys that identify the pod; drops all else."""
    entries = raw.rstrip(b"\0").split(b"\0")
    if truncated and entries:
        entries = entries[:-1]  # the last entry was cut in the middle
    env: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if not sep or key not in CNI_ENV_KEYS:
            continue
        if key == "CNI_ARGS":
            value = ";".join(
                pair for pair in value.split(";") if pair.partition("=")[0] in CNI_ARGS_KEYS
            )
        env[key] = value
    return env


def _decode_exec(raw: bytes | memoryview, header: Header) -> ExecEvent:
    old_pid, filename_len, argv_len, env_len, flags, _pad = _body(raw, EXEC_BODY, "exec")
    start = HEADER.size + EXEC_BODY.size
    end = start + filename_len + argv_len + env_len
    if end > len(raw):
        raise DecodeError(f"exec event data truncated: need {end} bytes, have {len(raw)}")
    data = bytes(raw[start:end])
    filename = _cstr(data[:filename_len])
    argv = _split_nul(data[filename_len:filename_len + argv_len])
    env: dict[str, str] = {}
    if flags & EXEC_FLAG_ENV_CAPTURED:
        cut = bool(flags & EXEC_FLAG_ENV_TRUNCATED) and not flags & EXEC_FLAG_ENV_FILTERED
        env = parse_env(data[filename_len + argv_len:], cut)
    return ExecEvent(header, old_pid, filename, argv, env, flags)


def _decode_fork(raw: bytes | memoryview, header: Header) -> ForkEvent:
    return ForkEvent(header, *_body(raw, FORK_BODY, "fork"))


def _decode_exit(raw: bytes | memoryview, header: Header) -> ExitEvent:
    return ExitEvent(header, *_body(raw, EXIT_BODY, "exit"))


def _decode_exec_failed(raw: bytes | memoryview, header: Header) -> ExecFailedEvent:
    ret, filename_len, _pad, filename = _body(raw, EXEC_FAILED_BODY, "exec failed")
    return ExecFailedEvent(header, ret, _cstr(filename[:filename_len]))


def _decode_oom_kill(raw: bytes | memoryview, header: Header) -> OomKillEvent:
    victim, adj, _pad, total_vm, anon, file, shmem, comm = _body(raw, OOM_KILL_BODY, "oom kill")
    return OomKillEvent(header, victim, adj, total_vm, anon, file, shmem, _cstr(comm))


def _decode_namespace(raw: bytes | memoryview, header: Header) -> NamespaceEvent:
    syscall, fd, flags, ret = _body(raw, NAMESPACE_BODY, "namespace")
    try:
        kind = NamespaceSyscall(syscall)
    except ValueError:
        raise DecodeError(f"unknown namespace syscall {syscall}") from None
    return NamespaceEvent(header, kind, fd, flags, ret)


def _decode_mount(raw: bytes | memoryview, header: Header) -> MountEvent:
    ret, flags, source, target, fstype = _body(raw, MOUNT_BODY, "mount")
    return MountEvent(header, ret, flags, _cstr(source), _cstr(target), _cstr(fstype))


def _decode_pivot_root(raw: bytes | memoryview, header: Header) -> PivotRootEvent:
    ret, new_root, put_old = _body(raw, PIVOT_ROOT_BODY, "pivot_root")
    return PivotRootEvent(header, ret, _cstr(new_root), _cstr(put_old))


def _decode_cgroup(raw: bytes | memoryview, header: Header) -> CgroupEvent:
    hierarchy, level, cgid, target, path_len, _pad, path = _body(raw, CGROUP_BODY, "cgroup")
    return CgroupEvent(header, hierarchy, level, cgid, target, _cstr(path[:path_len]))


def _decode_cgroup_write(raw: bytes | memoryview, header: Header) -> CgroupWriteEvent:
    magic, count, fd, data_len, _pad, names, data = _body(raw, CGROUP_WRITE_BODY, "cgroup write")
    split = tuple(
        _cstr(names[i * CGROUP_NAME_LEN:(i + 1) * CGROUP_NAME_LEN]) for i in range(CGROUP_NAME_DEPTH)
    )
    return CgroupWriteEvent(header, magic, count, fd, split, bytes(data[:min(data_len, len(data))]))


def _decode_socket_open(raw: bytes | memoryview, header: Header) -> SocketOpenEvent:
    endpoint, process_comm, path = _body(raw, SOCKET_OPEN_BODY, "socket open")
    return SocketOpenEvent(header, _endpoint(endpoint), _cstr(process_comm), _cstr(path))


def _decode_socket_close(raw: bytes | memoryview, header: Header) -> SocketCloseEvent:
    (endpoint,) = _body(raw, SOCKET_CLOSE_BODY, "socket close")
    return SocketCloseEvent(header, _endpoint(endpoint))


def _decode_socket_data(raw: bytes | memoryview, header: Header) -> SocketDataEvent:
    endpoint, syscall_bytes, offset, data_len, direction, flags, syscall = _body(
        raw, SOCKET_DATA_BODY, "socket data")
    start = HEADER.size + SOCKET_DATA_BODY.size
    if data_len > SOCKET_SEGMENT_LEN or start + data_len > len(raw):
        raise DecodeError(f"socket data event says {data_len} bytes, {len(raw) - start} arrived")
    try:
        kind = SocketDirection(direction)
    except ValueError:
        raise DecodeError(f"unknown socket direction {direction}") from None
    return SocketDataEvent(header, _endpoint(endpoint), kind, syscall_bytes, offset, syscall, flags,
                           bytes(raw[start:start + data_len]))


# One decoder per event type (Tetragon's observer registers its handlers the
# same way): a type added to EventType without a decoder fails at import,
# rather than being read as another type's bytes.
DECODERS: dict[int, Callable[[bytes | memoryview, Header], Event]] = {
    EventType.FORK: _decode_fork,
    EventType.EXEC: _decode_exec,
    EventType.PROC_SNAPSHOT: _decode_exec,
    EventType.EXIT: _decode_exit,
    EventType.EXEC_FAILED: _decode_exec_failed,
    EventType.OOM_KILL: _decode_oom_kill,
    EventType.NAMESPACE: _decode_namespace,
    EventType.MOUNT: _decode_mount,
    EventType.PIVOT_ROOT: _decode_pivot_root,
    EventType.CGROUP_MKDIR: _decode_cgroup,
    EventType.CGROUP_ATTACH: _decode_cgroup,
    EventType.CGROUP_WRITE: _decode_cgroup_write,
    EventType.SOCKET_OPEN: _decode_socket_open,
    EventType.SOCKET_SNAPSHOT: _decode_socket_open,
    EventType.SOCKET_CLOSE: _decode_socket_close,
    EventType.SOCKET_DATA: _decode_socket_data,
}
_undecodable = set(EventType) - DECODERS.keys()
if _undecodable:
    raise ImportError(f"event types without a decoder: {sorted(t.name for t in _undecodable)}")


def decode(raw: bytes | memoryview) -> Event:
    """One ring-buffer record (or recorded record) to a typed event.

    Raises DecodeError for anything malformed; never anything else.
    """
    header = decode_header(raw)
    if header.size > len(raw):
        raise DecodeError(f"event says {header.size} bytes but {len(raw)} arrived")
    decoder = DECODERS.get(header.type)
    if decoder is None:
        raise DecodeError(f"unknown event type {header.type}")
    return decoder(raw, header)


def _endpoint(raw: bytes) -> SocketEndpoint:
    inode, peer, fd, side = SOCKET_ENDPOINT.unpack(raw)
    try:
        return SocketEndpoint(inode, peer, fd, SocketSide(side))
    except ValueError:
        raise DecodeError(f"unknown socket side {side}") from None


def encode_socket_open(event: SocketOpenEvent) -> bytes:
    """The wire form of a socket-open-shaped event (used for snapshots)."""
    e = event.endpoint
    body = SOCKET_OPEN_BODY.pack(SOCKET_ENDPOINT.pack(e.inode, e.peer_inode, e.fd, e.side),
                                 event.process_comm.encode()[:TASK_COMM_LEN - 1],
                                 event.path.encode()[:SOCKET_PATH_LEN - 1])
    header = Header(**{**_header_fields(event.header), "size": HEADER.size + len(body)})
    return encode_header(header) + body


def encode_socket_close(event: SocketCloseEvent) -> bytes:
    """The wire form of a socket close (userspace makes one for an endpoint
    that was closed without close(2): at exit, or at exec by O_CLOEXEC)."""
    e = event.endpoint
    body = SOCKET_CLOSE_BODY.pack(SOCKET_ENDPOINT.pack(e.inode, e.peer_inode, e.fd, e.side))
    header = Header(**{**_header_fields(event.header), "size": HEADER.size + len(body)})
    return encode_header(header) + body


def encode_header(header: Header) -> bytes:
    ns = header.ns
    return HEADER.pack(
        header.type, header.size, header.cpu, header.ktime_ns, header.pid, header.tgid,
        header.ppid, 0, header.start_ns, header.parent_start_ns, header.cgroup_id,
        header.cgroup_v1_id, ns.mnt, ns.pid, ns.net, ns.uts, ns.ipc, ns.cgroup,
        header.comm.encode()[:TASK_COMM_LEN - 1],
    )


def encode_exec(event: ExecEvent) -> bytes:
    """The wire form of an exec-shaped event (used for snapshots and sanitising)."""
    filename = event.filename.encode()[:FILENAME_MAX_LEN - 1] + b"\0"
    argv = b"".join(arg.encode() + b"\0" for arg in event.argv)[:ARGV_MAX_LEN - 1]
    env = b"".join(f"{k}={v}".encode() + b"\0" for k, v in event.env.items())[:ENV_MAX_LEN - 1]
    body = EXEC_BODY.pack(event.old_pid, len(filename), len(argv), len(env), event.flags_raw, 0)
    size = HEADER.size + len(body) + len(filename) + len(argv) + len(env)
    header = Header(**{**_header_fields(event.header), "size": size})
    return encode_header(header) + body + filename + argv + env


def _header_fields(header: Header) -> dict:
    return {name: getattr(header, name) for name in Header.__slots__}


def sanitize(raw: bytes, redaction: ArgvRedaction = DEFAULT_REDACTION) -> bytes:
    """Bytes safe to store: exec events, and processes found running
    (PROC_SNAPSHOT), with their argv redacted (tracer.redaction: secrets in
    command lines) and only their CNI_* environment keys.

    The BPF program copies a CNI plugin's environment, which also holds
    containerd's own environment; only the allow-listed keys survive.
    Idempotent: sanitising sanitised bytes returns them unchanged.
    """
    if len(raw) < HEADER.size or (raw[0] | raw[1] << 8) not in _EXEC_SHAPED:  # the header's u16 type
        return raw
    event = _decode_exec(raw, decode_header(raw))
    argv = redaction.redact(event.filename, event.argv)
    env_captured = bool(event.flags_raw & EXEC_FLAG_ENV_CAPTURED)
    if argv == event.argv and (not env_captured or event.flags_raw & EXEC_FLAG_ENV_FILTERED):
        return raw
    flags = event.flags_raw | (EXEC_FLAG_ENV_FILTERED if env_captured else 0)
    return encode_exec(replace(event, argv=argv, flags_raw=flags))


_EXEC_SHAPED = (EventType.EXEC, EventType.PROC_SNAPSHOT)
