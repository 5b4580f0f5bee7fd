"""BPF capture: the only module that imports bcc.

Loads bpf/tracer.bpf.c with struct offsets from BTF as -D macros, checks
those offsets against /proc before trusting them, seeds the in-kernel
filter with the runtime processes that already run (and records them as
snapshot events), and hands raw event bytes to a callback in batches.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tracer import kernel
from tracer.cgroups import cgroup_id
from tracer.events import (
    HEADER,
    SOCKET_CLOSE_BODY,
    SOCKET_ENDPOINT,
    SOCKET_PATH_LEN,
    EventType,
    ExecEvent,
    Header,
    NamespaceEvent,
    Namespaces,
    SocketCloseEvent,
    SocketEndpoint,
    SocketOpenEvent,
    SocketSide,
    decode,
    encode_exec,
    encode_header,
    encode_socket_close,
    encode_socket_open,
)
from tracer.offsets import kernel_offsets
from tracer.preflight import require_tracing
from tracer.procfs import CLOCK_TICKS, proc_start_ns, read_stat
from tracer.runtime import DEFAULT_CNI_BIN_DIRS
from tracer.sockets import ExistingEndpoint, cri_listeners, path_variants, scan_cri_sockets

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
BPF_SOURCE = BPF_DIR / "tracer.bpf.c"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CNI_PREFIX_LEN = 48
CNI_PREFIX_SLOTS = 4
# comm values (first 15 bytes of the program name) of runtime daemons whose
# process trees are traced; containers are their descendants.
RUNTIME_COMMS = ("containerd", "containerd-shim", "runc", "crio", "conmon", "cri-dockerd", "kubelet")
STAT_NAMES = {0: "tracked_table_full", 1: "syscall_entry_missing", 2: "socket_io_truncated",
              3: "cri_endpoints_full"}
DEFAULT_CRI_SOCKETS = tuple(kernel.DEFAULT_RUNTIME_SOCKETS.values())
# How often the runtime sockets are looked at again (a restarted runtime's
# new listener).
LISTENER_RESCAN_S = 1.0
# The in-kernel maps whose entries come and go with processes and sockets
# (the LRU maps bound themselves).
WATCHED_MAPS = ("tracked", "cri_endpoints", "cri_tgids", "cri_listeners", "cri_gaps")


class SelfCheckError(RuntimeError):
    """The BTF offsets gave values that disagree with /proc: do not trace."""


@dataclass(frozen=True)
class CaptureConfig:
    ring_buffer_bytes: int = 32 << 20
    drain_interval_s: float = 0.01
    cni_bin_dirs: tuple[str, ...] = DEFAULT_CNI_BIN_DIRS
    runtime_comms: tuple[str, ...] = RUNTIME_COMMS
    cri_sockets: tuple[str, ...] = DEFAULT_CRI_SOCKETS


@dataclass
class CaptureStats:
    attach_seconds: float = 0.0
    seeded_processes: int = 0
    seeded_cri_endpoints: int = 0
    lost_by_type: dict[int, int] = field(default_factory=dict)
    kernel_stats: dict[str, int] = field(default_factory=dict)
    endpoints_reaped: int = 0       # endpoints closed without close(2), removed by forget_endpoints
    kernel_tables: dict[str, int] = field(default_factory=dict)  # entries per BPF map, at the last count


def bpf_cflags(config: CaptureConfig) -> list[str]:
    pages = max(1, config.ring_buffer_bytes // PAGE_SIZE)
    pages = 1 << (pages.bit_length() - 1)  # ring buffers are a power of two pages
    return [*kernel_offsets().as_cflags(), f"-DRINGBUF_PAGES={pages}", f"-I{BPF_DIR}",
            "-Wno-macro-redefined", "-Wno-unused-function"]


def final_source(config: CaptureConfig) -> str:
    """The BPF source and the exact flags it is compiled with (for --print-bpf)."""
    flags = " ".join(bpf_cflags(config))
    return f"/* cflags: {flags} */\n" + BPF_SOURCE.read_text()


class Capture:
    def __init__(self, config: CaptureConfig, on_batch: Callable[[list[bytes]], None]):
        self.config = config
        self.on_batch = on_batch
        self.stats = CaptureStats()
        self._bpf = None
        self._batch: list[bytes] = []
        self._lost_seen: dict[int, int] = {}
        self._listeners: set[int] = set()
        # Every event stamped before this (monotonic ns) has been handed to
        # on_batch: the start of the last drain whose batch was processed.
        self.drained_until_ns = 0

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> list[bytes]:
        """Compiles, loads, attaches, self-checks and seeds.

        Returns snapshot events (raw bytes) for the runtime processes that
        already run; they belong at the start of the stream.
        """
        started = time.monotonic()
        # a clear refusal (CannotTrace) rather than a failure deep in bcc;
        # it also mounts tracefs: bcc picks its tracefs path at import time
        require_tracing()
        kernel.prepare_headers()
        from bcc import BPF  # the only bcc import outside kernel feature probes

        self._bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=bpf_cflags(self.config))
        self._configure_filters()
        self._bpf[b"events"].open_ring_buffer(self._on_event)
        self._self_check()
        processes = scan_proc()
        snapshot = self._seed_runtime_processes(processes) + self._seed_cri_sockets(processes)
        self.stats.attach_seconds = time.monotonic() - started
        return snapshot

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def _configure_filters(self) -> None:
        comms = self._bpf[b"runtime_comms"]
        for comm in self.config.runtime_comms:
            key = comms.Key()
            key.comm = comm.encode()[:15]
            comms[key] = ctypes.c_uint8(1)
        prefixes = self._bpf[b"cni_prefixes"]
        for prefix in self.config.cni_bin_dirs[:CNI_PREFIX_SLOTS]:
            directory = (prefix.rstrip("/") + "/").encode()[:CNI_PREFIX_LEN]
            key = prefixes.Key()
            key.prefixlen = len(directory) * 8
            key.prefix = directory
            prefixes[key] = ctypes.c_uint8(1)

    # ---- events ------------------------------------------------------------

    def _on_event(self, _ctx, data, size) -> None:
        self._batch.append(ctypes.string_at(data, size))

    def drain(self) -> int:
        """Consumes what the ring buffer holds; returns how many events."""
        started = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._bpf.ring_buffer_consume()
        batch, self._batch = self._batch, []
        self.on_batch(batch)  # also when empty: time moves the reorder window
        self.drained_until_ns = started
        return len(batch)

    def run(self, stop: threading.Event) -> None:
        """Drains on a short timer (the kernel side does not wake us per event)."""
        next_rescan = time.monotonic() + LISTENER_RESCAN_S
        while not stop.is_set():
            self.drain()
            if time.monotonic() >= next_rescan:
                self._rescan_sockets()
                next_rescan = time.monotonic() + LISTENER_RESCAN_S
            stop.wait(self.config.drain_interval_s)
        self.drain()

    def _rescan_sockets(self) -> None:
        """A runtime that restarts listens on a new socket inode: watch it
        (and forget the old one), and seed the connections it accepted
        before we watched it, as at start (kubelet reconnects at once)."""
        listeners = cri_listeners(list(self.config.cri_sockets))
        new_listeners = listeners - self._listeners
        self._register_listeners(listeners)
        if new_listeners:
            known = {key.value for key in self._bpf[b"cri_endpoints"].keys()}
            _, existing = scan_cri_sockets(list(self.config.cri_sockets))
            fresh = [e for e in existing if e.inode not in known]
            holders = {e.pid for e in fresh}
            self._batch.extend(self._register_existing(fresh, {pid: info for pid in holders
                                                                if (info := proc_info(pid)) is not None}))

    def forget_endpoint(self, inode: int) -> None:
        """An endpoint whose socket is gone (its process died with it open:
        the kernel closed it, with no close(2) to see)."""
        for name in (b"cri_endpoints", b"cri_gaps"):
            try:
                del self._bpf[name][ctypes.c_uint64(inode)]
            except KeyError:
                pass

    def map_sizes(self) -> dict[str, int]:
        """Entries in the in-kernel maps that must not grow without bound."""
        if self._bpf is None:
            return {}
        return {f"bpf_{name}": sum(1 for _ in self._bpf[name.encode()].keys()) for name in WATCHED_MAPS}

    def new_losses(self) -> dict[int, int]:
        """Events lost in the kernel since the last call, by event type."""
        totals: dict[int, int] = {}
        for etype, per_cpu in self._bpf[b"lost"].items():
            total = sum(per_cpu)
            if total:
                totals[etype.value] = total
        fresh = {t: n - self._lost_seen.get(t, 0) for t, n in totals.items() if n > self._lost_seen.get(t, 0)}
        self._lost_seen = totals
        self.stats.lost_by_type = totals
        self.stats.kernel_stats = {
            STAT_NAMES.get(k.value, str(k.value)): sum(v) for k, v in self._bpf[b"stats"].items() if sum(v)
        }
        return fresh

    def forget_endpoints(self, endpoints: list[tuple[int, int, SocketSide, int, str]], ktime_ns: int) -> list[bytes]:
        """Removes CRI endpoints that were closed without close(2) from the
        kernel's map, so that it never fills with dead sockets, and returns a
        SOCKET_CLOSE event for each, for the pipeline and the recording.

        `endpoints`: (inode, peer inode, side, holder tgid, holder comm).  A
        process that exits, or execs with the socket marked O_CLOEXEC, closes
        it without the close(2) that the BPF program watches."""
        table = self._bpf[b"cri_endpoints"]
        closes = []
        for inode, peer_inode, side, tgid, comm in endpoints:
            fd = 0
            try:
                fd = table[ctypes.c_uint64(inode)].fd
                del table[ctypes.c_uint64(inode)]
            except KeyError:
                pass  # not in the kernel's map (its registration was refused or lost)
            header = Header(type=EventType.SOCKET_CLOSE, size=0, cpu=0, ktime_ns=ktime_ns, pid=tgid, tgid=tgid,
                            ppid=0, start_ns=0, parent_start_ns=0, cgroup_id=0, cgroup_v1_id=0, ns=Namespaces(),
                            comm=comm)
            endpoint = SocketEndpoint(inode, peer_inode, fd, side)
            closes.append(encode_socket_close(SocketCloseEvent(header, endpoint)))
        self.stats.endpoints_reaped += len(endpoints)
        return closes

    def count_kernel_tables(self) -> dict[str, int]:
        """Entries in the BPF maps that userspace cannot bound by itself
        (one map walk each: call it seconds apart, not per batch)."""
        self.stats.kernel_tables = {name: sum(1 for _ in self._bpf[name.encode()].keys())
                                    for name in WATCHED_MAPS}
        return self.stats.kernel_tables

    # ---- self-check --------------------------------------------------------

    def _self_check(self) -> None:
        """Traces ourselves for one no-op unshare(0) and compares with /proc.

        Offsets from BTF are trusted only once the values they produce agree
        with what the kernel reports through /proc for this very process.
        """
        tracked = self._bpf[b"tracked"]
        me = ctypes.c_uint32(os.getpid())
        tracked[me] = ctypes.c_uint8(1)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.unshare(0)
            deadline = time.monotonic() + 1.0
            sample = None
            while sample is None and time.monotonic() < deadline:
                self._bpf.ring_buffer_consume()
                others = []
                for raw in self._batch:
                    event = decode(raw)
                    if event.header.tgid == os.getpid():
                        if isinstance(event, NamespaceEvent):
                            sample = event
                    else:
                        others.append(raw)  # a runtime process, recognised at exec: keep it
                self._batch = others
                time.sleep(0.005)
        finally:
            del tracked[me]
        if sample is None:
            raise SelfCheckError("self-check: no event arrived from our own unshare(0)")
        problems = compare_with_proc(sample.header)
        if problems:
            raise SelfCheckError("BTF offsets disagree with /proc: " + "; ".join(problems))

    # ---- seeding -----------------------------------------------------------

    def _seed_runtime_processes(self, processes: dict[int, "ProcInfo"]) -> list[bytes]:
        """Tracks runtime daemons that already run, and all their descendants."""
        roots = {pid for pid, p in processes.items() if p.comm in self.config.runtime_comms}
        children: dict[int, list[int]] = {}
        for pid, p in processes.items():
            children.setdefault(p.ppid, []).append(pid)
        seeded: list[int] = []
        stack = sorted(roots)
        while stack:
            pid = stack.pop()
            if pid in seeded:
                continue
            seeded.append(pid)
            stack.extend(children.get(pid, []))
        tracked = self._bpf[b"tracked"]
        snapshot = []
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for pid in sorted(seeded, key=lambda p: processes[p].start_ns):
            tracked[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
            snapshot.append(processes[pid].snapshot_event(now, processes))
        self.stats.seeded_processes = len(seeded)
        return snapshot

    def _register_listeners(self, listeners: set[int]) -> None:
        """Watches exactly these listening sockets (the map has 64 slots:
        the old listener of a restarted runtime must go)."""
        table = self._bpf[b"cri_listeners"]
        for inode in listeners - self._listeners:
            table[ctypes.c_uint64(inode)] = ctypes.c_uint8(1)
        for inode in self._listeners - listeners:
            try:
                del table[ctypes.c_uint64(inode)]
            except KeyError:
                pass
        self._listeners = set(listeners)

    def _seed_cri_sockets(self, processes: dict[int, "ProcInfo"]) -> list[bytes]:
        """Watches the runtime sockets; returns snapshot events for the
        connections that are already open (kubelet's, typically)."""
        paths = self._bpf[b"cri_paths"]
        for path in self.config.cri_sockets:
            for variant in path_variants(path):
                key = paths.Key()
                key.path = variant.encode()[:SOCKET_PATH_LEN - 1]
                paths[key] = ctypes.c_uint8(1)
        listeners, endpoints = scan_cri_sockets(list(self.config.cri_sockets))
        self._register_listeners(listeners)
        snapshot = self._register_existing(endpoints, processes)
        self.stats.seeded_cri_endpoints = len(endpoints)
        return snapshot

    def _register_existing(self, endpoints: list[ExistingEndpoint], processes: dict[int, "ProcInfo"]) -> list[bytes]:
        """Puts connection ends that are open already into the maps; a
        SOCKET_SNAPSHOT event each."""
        table, holders = self._bpf[b"cri_endpoints"], self._bpf[b"cri_tgids"]
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        snapshot = []
        for existing in endpoints:
            side = SocketSide.CLIENT if existing.side == "client" else SocketSide.SERVER
            leaf = table.Leaf()
            leaf.inode, leaf.peer_inode, leaf.fd, leaf.side = existing.inode, existing.peer_inode, existing.fd, side
            table[ctypes.c_uint64(existing.inode)] = leaf
            holders[ctypes.c_uint32(existing.pid)] = ctypes.c_uint8(1)
            if existing.pid in processes:
                snapshot.append(_socket_snapshot(existing, side, processes[existing.pid], now))
        return snapshot


def _socket_snapshot(existing: ExistingEndpoint, side: SocketSide, holder: "ProcInfo", ktime_ns: int) -> bytes:
    header = Header(
        type=EventType.SOCKET_SNAPSHOT, size=0, cpu=0, ktime_ns=ktime_ns, pid=holder.pid, tgid=holder.pid,
        ppid=holder.ppid, start_ns=holder.start_ns, parent_start_ns=0, cgroup_id=holder.cgroup_id,
        cgroup_v1_id=0, ns=holder.namespaces, comm=holder.comm,
    )
    endpoint = SocketEndpoint(existing.inode, existing.peer_inode, existing.fd, side)
    return encode_socket_open(SocketOpenEvent(header, endpoint, holder.comm, existing.path))


def socket_close_event(endpoint: SocketEndpoint, ktime_ns: int) -> bytes:
    """A SOCKET_CLOSE event for a socket the kernel closed on its own."""
    header = Header(
        type=EventType.SOCKET_CLOSE, size=HEADER.size + SOCKET_CLOSE_BODY.size, cpu=0, ktime_ns=ktime_ns, pid=0,
        tgid=0, ppid=0, start_ns=0, parent_start_ns=0, cgroup_id=0, cgroup_v1_id=0, ns=Namespaces(), comm="",
    )
    return encode_header(header) + SOCKET_CLOSE_BODY.pack(
        SOCKET_ENDPOINT.pack(endpoint.inode, endpoint.peer_inode, endpoint.fd, int(endpoint.side)))


# ---- /proc -------------------------------------------------------------------

@dataclass
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    start_ns: int          # monotonic, to clock-tick precision
    argv: tuple[str, ...]
    exe: str
    cgroup_id: int
    namespaces: Namespaces

    def snapshot_event(self, ktime_ns: int, processes: dict[int, "ProcInfo"]) -> bytes:
        parent = processes.get(self.ppid)
        header = Header(
            type=EventType.PROC_SNAPSHOT, size=0, cpu=0, ktime_ns=ktime_ns, pid=self.pid, tgid=self.pid,
            ppid=self.ppid, start_ns=self.start_ns, parent_start_ns=parent.start_ns if parent else 0,
            cgroup_id=self.cgroup_id, cgroup_v1_id=0, ns=self.namespaces, comm=self.comm,
        )
        return encode_exec(ExecEvent(header, self.pid, self.exe, self.argv))


def _ns_inode(pid: int | str, name: str) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino
    except OSError:
        return 0


def proc_namespaces(pid: int | str) -> Namespaces:
    return Namespaces(mnt=_ns_inode(pid, "mnt"), pid=_ns_inode(pid, "pid_for_children"),
                      net=_ns_inode(pid, "net"), uts=_ns_inode(pid, "uts"), ipc=_ns_inode(pid, "ipc"),
                      cgroup=_ns_inode(pid, "cgroup"))


def proc_info(pid: int) -> ProcInfo | None:
    """What /proc says about a process; None if it exited while we looked."""
    try:
        comm, fields = read_stat(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = tuple(a.decode("utf-8", "replace") for a in f.read().rstrip(b"\0").split(b"\0") if a)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = argv[0] if argv else ""
        return ProcInfo(pid, int(fields[1]), comm, proc_start_ns(fields), argv, exe,
                        cgroup_id(pid), proc_namespaces(pid))
    except (OSError, ValueError, IndexError):
        return None


def scan_proc() -> dict[int, ProcInfo]:
    processes = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := proc_info(int(entry))) is not None:
            processes[info.pid] = info
    return processes


def compare_with_proc(header: Header) -> list[str]:
    """Differences between what BPF read for us and what /proc says."""
    problems = []
    comm, fields = read_stat(os.getpid())
    expected = {
        "tgid": os.getpid(), "ppid": os.getppid(), "cgroup v2 id": cgroup_id("self"),
    }
    actual = {"tgid": header.tgid, "ppid": header.ppid, "cgroup v2 id": header.cgroup_id}
    ns = proc_namespaces("self")
    for name in ("mnt", "pid", "net", "uts", "ipc", "cgroup"):
        expected[f"{name} namespace"] = getattr(ns, name)
        actual[f"{name} namespace"] = getattr(header.ns, name)
    for key, value in expected.items():
        if value and actual[key] != value:
            problems.append(f"{key}: BPF read {actual[key]}, /proc says {value}")
    tick_ns = 1_000_000_000 // CLOCK_TICKS
    start = proc_start_ns(fields)
    if abs(header.start_ns - start) > 2 * tick_ns:
        problems.append(f"start time: BPF read {header.start_ns} ns, /proc says {start} ns")
    memory_id = cgroup_id("self", "memory")
    if memory_id and header.cgroup_v1_id != memory_id:
        problems.append(f"memory cgroup id: BPF read {header.cgroup_v1_id}, /proc says {memory_id}")
    return problems
