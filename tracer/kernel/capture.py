"""BPF capture: the only module that imports bcc.

Loads bpf/tracer.bpf.c with struct offsets from BTF as -D macros, checks
those offsets against /proc before trusting them, seeds the in-kernel
filter with the runtime processes that already run (and records them as
snapshot events), and hands raw event bytes to a callback in batches.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import re
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tracer.events import (
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
    encode_socket_close,
    encode_socket_open,
)
from tracer.kernel import headers
from tracer.kernel.armer import DEFAULT_HOLD_S, HookState, attach_raw_tracepoint, map_hook_state
from tracer.kernel.cgroups import cgroup_id
from tracer.kernel.modes import Mode, ModeChoice, choose_mode
from tracer.kernel.offsets import kernel_offsets
from tracer.kernel.preflight import require_tracing
from tracer.kernel.procfs import CLOCK_TICKS, proc_start_ns, read_stat
from tracer.kernel.sockets import (
    HeldSocket,
    path_variants,
    scan_cri_sockets,
    unix_sockets,
)
from tracer.kernel.sources import BPF_DIR, TRACER_SOURCE, translation_unit
from tracer.runtimes import DEFAULT_CNI_BIN_DIRS, DEFAULT_RUNTIME_SOCKETS, RUNTIME_COMMS, WAKING_COMMS, WORKER_COMMS

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CNI_PREFIX_LEN = 48
CNI_PREFIX_SLOTS = 4
STAT_NAMES = {0: "syscall_entry_missing", 1: "socket_io_truncated", 2: "cri_endpoints_full",
              3: "socket_io_unreadable", 4: "workers_full", 5: "registers_mismatch",
              6: "late_threads_namespaces", 7: "late_threads_writes", 8: "late_threads_mounts",
              9: "late_threads_unknown"}
# The COMM_* bits of `runtime_comms` values (bpf/process.h)
COMM_RUNTIME, COMM_WORKER, COMM_WAKES = 0x1, 0x2, 0x4
ARMED_PROGRAM = b"armed_sys_exit"   # bpf/tracer.bpf.c, attached by the armer
SETTLE_ITERATOR = b"bpf_iter__task"  # bpf/arming.h, run by the armer after each attach
EXEC_CLASSIFIER = b"exec_classify"   # bpf/process.h, tail-called by sched_process_exec
ARMER_START_TIMEOUT_S = 30.0
DEFAULT_CRI_SOCKETS = tuple(DEFAULT_RUNTIME_SOCKETS.values())
LOST_ALL_TYPES = 0  # the `lost` slot that counts every type
# Shared objects that only compiling uses (bcc's clang/LLVM for the BPF
# program, grpc_tools' protoc for api.proto at import): their pages are
# released once the programs are loaded.
COMPILER_OBJECTS = re.compile(r"/lib(LLVM|clang|bcc|bpfcc)[^/]*\.so|/_protoc_compiler[^/]*\.so")
MADV_PAGEOUT = 21
# The in-kernel hash maps whose entries come and go with sockets (the LRU
# maps bound themselves; the per-id flag arrays are counted by their flags).
WATCHED_MAPS = ("cri_endpoints", "cri_gaps")


class SelfCheckError(RuntimeError):
    """The BTF offsets gave values that disagree with /proc: do not trace."""


@dataclass(frozen=True)
class CaptureConfig:
    # Every page of the ring is resident in the tracer once its records have
    # been read (twice over: libbpf maps the data area twice): 16 MiB is 32 MB
    # of the tracer's RSS, and holds several seconds of a 50-pod burst
    # (docs/performance.md).
    ring_buffer_bytes: int = 16 << 20
    drain_interval_s: float = 0.01       # while events arrive
    idle_drain_interval_s: float = 0.1   # the longest wait, after empty drains (doubling from the above)
    cni_bin_dirs: tuple[str, ...] = DEFAULT_CNI_BIN_DIRS
    runtime_comms: tuple[str, ...] = RUNTIME_COMMS
    worker_comms: tuple[str, ...] = WORKER_COMMS
    waking_comms: tuple[str, ...] = WAKING_COMMS
    cri_sockets: tuple[str, ...] = DEFAULT_CRI_SOCKETS
    # "auto", "on-demand" or "always" (tracer.kernel.modes)
    syscall_programs: str = "auto"
    # the armer (tracer.kernel.armer): how long the syscall program stays
    # attached after the last worker ended or the last request (a
    # pod-changing CRI request, a shim's start), when a worker counts as
    # stuck, and where it logs its attaches (the benchmark reads it)
    armer_hold_s: float = DEFAULT_HOLD_S
    armer_stuck_s: float = 30.0
    armer_log: str | None = None
    # False: no armer, the syscall program is never attached (on-demand mode;
    # the kernel tests see every worker run unhooked)
    armer: bool = True


@dataclass
class CaptureStats:
    attach_seconds: float = 0.0
    rss_after_load_mb: float = 0.0       # before releasing the compiler's memory
    rss_after_release_mb: float = 0.0
    seeded_processes: int = 0
    seeded_cri_endpoints: int = 0
    lost_by_type: dict[int, int] = field(default_factory=dict)
    kernel_stats: dict[str, int] = field(default_factory=dict)
    endpoints_reaped: int = 0       # endpoints closed without close(2), removed by forget_endpoints
    kernel_tables: dict[str, int] = field(default_factory=dict)  # entries per BPF map, at the last count
    armer_restarts: int = 0         # the armer died and was started again
    armer_priority: str = ""        # what the armer runs at (tracer.kernel.armer.raise_priority)


def bpf_cflags(config: CaptureConfig, mode: Mode) -> list[str]:
    pages = max(1, config.ring_buffer_bytes // PAGE_SIZE)
    pages = 1 << (pages.bit_length() - 1)  # ring buffers are a power of two pages
    return [*kernel_offsets().as_cflags(), f"-DRINGBUF_PAGES={pages}",
            f"-DTRACER_PAGE_SHIFT={PAGE_SIZE.bit_length() - 1}", f"-I{BPF_DIR}",
            f"-DTRACER_SOCKET_TRACEPOINTS={int(mode is Mode.ON_DEMAND)}",
            "-Wno-macro-redefined", "-Wno-unused-function"]


def final_source(config: CaptureConfig) -> str:
    """The one translation unit bcc compiles (bpf/ inlined, see
    tracer.kernel.sources) and the exact flags it is compiled with (for
    --print-bpf), in the mode this kernel gets."""
    flags = " ".join(bpf_cflags(config, choose_mode(config.syscall_programs).mode))
    return f"/* cflags: {flags} */\n" + translation_unit(TRACER_SOURCE)


def comm_roles(config: CaptureConfig) -> dict[str, int]:
    """comm (15 bytes at most, as the kernel keeps it) → COMM_* bits."""
    roles: dict[str, int] = {}
    for comms, bit in ((config.runtime_comms, COMM_RUNTIME), (config.worker_comms, COMM_WORKER),
                       (config.waking_comms, COMM_WAKES)):
        for comm in comms:
            roles[comm[:15]] = roles.get(comm[:15], 0) | bit
    return roles


class IdFlags:
    """A BPF array of one flag byte per process (or thread) id: `struct
    flags8` elements in a BPF_F_MMAPABLE array, so that byte `id` of the
    mapping is the flag of `id`.  Userspace sets a flag with one byte store,
    never a read-modify-write of the 8-byte element, which would race with
    the kernel setting a neighbour's byte."""

    def __init__(self, table) -> None:
        self._size = table.max_entries * ctypes.sizeof(table.Leaf)
        self._map = mmap.mmap(table.get_fd(), self._size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def __setitem__(self, id_: int, value: bool) -> None:
        self._map[id_] = 1 if value else 0

    def __getitem__(self, id_: int) -> bool:
        return self._map[id_] != 0

    def count(self) -> int:
        """How many ids are flagged."""
        return self._size - bytes(self._map).count(0)

    def close(self) -> None:
        self._map.close()


def release_compiler_memory() -> None:
    """Gives back what compiling the BPF program left behind: freed heap
    (malloc_trim) and the pages of clang/LLVM and bcc's own code
    (MADV_PAGEOUT on their mappings).  Nothing is lost: pages come back from
    the files if ever touched again (MADV_PAGEOUT never drops a dirty private
    page; with no swap such pages stay)."""
    gc.collect()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.malloc_trim(0)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and COMPILER_OBJECTS.search(fields[5]):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                libc.madvise(start, end - start, MADV_PAGEOUT)  # best effort: old kernels say EINVAL


def _iterator_link(program_fd: int) -> int:
    """A link for a loaded task iterator (BPF_LINK_CREATE, through libbcc)."""
    from bcc import lib

    lib.bcc_iter_attach.restype = ctypes.c_int
    lib.bcc_iter_attach.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
    fd = lib.bcc_iter_attach(program_fd, None, 0)
    if fd < 0:
        raise OSError(-fd, f"attaching the task iterator: {os.strerror(-fd)}")
    return fd


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class SpawnedProcess:
    """A child started with posix_spawn(), not fork(): the tracer runs grpc
    (the CRI decoder's protos, the OTLP exporter), and a fork runs grpc's fork
    handlers under its poller thread; posix_spawn runs none.  Its stderr is
    a pipe; `fds` are passed as they are numbered."""

    def __init__(self, pid: int, stderr) -> None:
        self.pid, self.stderr, self.returncode = pid, stderr, None

    @classmethod
    def spawn(cls, command: list[str], fds: tuple[int, ...]) -> SpawnedProcess:
        read_end, write_end = os.pipe()
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in fds:
                os.set_inheritable(fd, True)
            pid = os.posix_spawn(command[0], command, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                (os.POSIX_SPAWN_DUP2, write_end, 2)])
        finally:
            for fd in fds:
                os.set_inheritable(fd, False)
            os.close(write_end)
            os.close(devnull)
        return cls(pid, os.fdopen(read_end, "r"))

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def terminate(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait(timeout_s=10)


class Capture:
    def __init__(self, config: CaptureConfig, on_batch: Callable[[list[bytes]], None] | None = None):
        self.config = config
        self.on_batch = on_batch  # set before start() when not given here
        self.stats = CaptureStats()
        self._bpf = None
        self._loader: threading.Thread | None = None
        self._load_error: BaseException | None = None
        self._load_began = 0.0
        self._tracked: IdFlags | None = None
        self._cri_holders: IdFlags | None = None
        self.mode: ModeChoice | None = None
        self._armed_program = None       # on-demand: the loaded sys_exit program (bcc's function)
        self._iterator_link = -1         # on-demand: the settling task iterator's link
        self._armer: SpawnedProcess | None = None
        self._hooks_mapping: mmap.mmap | None = None
        self._hooks: HookState | None = None
        self._batch: list[bytes] = []
        self._lost_seen: dict[int, int] = {}
        self._lost_total_seen = 0
        self._interrupt = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._idle_poll: select.poll | None = None  # ring buffer wake-ups or interrupt
        self._busy_poll = select.poll()              # interrupt only
        self._busy_poll.register(self._interrupt, select.POLLIN)
        # CLOCK_MONOTONIC just before the current (or last) drain began:
        # every event the kernel stamped before it is in that drain's batch
        # or an earlier one (daemon mode takes pod starts as over only up to
        # the drain whose batch was processed).
        self.drain_began_ns = 0

    # ---- lifecycle ---------------------------------------------------------

    def begin_load(self) -> None:
        """Starts compiling, loading and attaching the programs in a thread
        of its own, so that what the caller does meanwhile (importing the
        rest of the tracer, say) overlaps the second or so of compiling:
        bcc's compiler runs without the GIL.  start() waits for it."""
        self._load_began = time.monotonic()
        self._loader = threading.Thread(target=self._load_in_thread, name="tracer-bpf-load", daemon=True)
        self._loader.start()

    def _load_in_thread(self) -> None:
        try:
            self._load()
        except BaseException as error:  # re-raised by start(), in the caller's thread
            self._load_error = error

    def _load(self) -> None:
        # a clear refusal (CannotTrace) rather than a failure deep in bcc;
        # it also mounts tracefs: bcc picks its tracefs path at import time
        require_tracing()
        headers.prepare_headers()
        from bcc import BPF  # the only bcc import outside kernel feature probes

        self.mode = choose_mode(self.config.syscall_programs)
        self._bpf = BPF(text=translation_unit(TRACER_SOURCE).encode(), cflags=bpf_cflags(self.config, self.mode.mode))
        if self.mode.mode is Mode.ON_DEMAND:
            classifier = self._bpf.load_func(EXEC_CLASSIFIER, BPF.RAW_TRACEPOINT)
            self._bpf[b"exec_tail"][ctypes.c_int(0)] = ctypes.c_int(classifier.fd)
            self._armed_program = self._bpf.load_func(ARMED_PROGRAM, BPF.RAW_TRACEPOINT)
            self._iterator_link = _iterator_link(self._bpf.load_func(SETTLE_ITERATOR, BPF.TRACING).fd)
            self._hooks_mapping, self._hooks = map_hook_state(self._bpf[b"hooks"].get_fd())
        self.stats.rss_after_load_mb = _rss_mb()
        release_compiler_memory()
        self.stats.rss_after_release_mb = _rss_mb()
        self._tracked = IdFlags(self._bpf[b"tracked"])
        self._cri_holders = IdFlags(self._bpf[b"cri_tgids"])

    def start(self) -> list[bytes]:
        """Compiles, loads, attaches (or waits for begin_load() to have),
        self-checks and seeds.

        Returns snapshot events (raw bytes) for the runtime processes that
        already run; they belong at the start of the stream.
        """
        if self._loader is None:
            started = time.monotonic()
            self._load()
        else:
            started = self._load_began
            self._loader.join()
            self._loader = None
            if self._load_error is not None:
                raise self._load_error
        self._configure_filters()
        self._bpf[b"events"].open_ring_buffer(self._on_event)
        self._idle_poll = self._wakeup_poll()
        self._self_check()
        processes = scan_proc()
        snapshot = self._seed_runtime_processes(processes) + self._seed_cri_sockets(processes)
        if self.mode.mode is Mode.ON_DEMAND and self.config.armer:
            self._start_armer()
        self.stats.attach_seconds = time.monotonic() - started
        return snapshot

    def _start_armer(self) -> None:
        """The armer (tracer.kernel.armer), with the program and the maps it
        needs as inherited descriptors; waits until it is ready."""
        fds = (self._armed_program.fd, self._bpf[b"hooks"].get_fd(), self._bpf[b"arm_requests"].get_fd(),
               self._iterator_link)
        command = [sys.executable, "-m", "tracer.kernel.armer", "--program-fd", str(fds[0]), "--hooks-fd",
                   str(fds[1]), "--requests-fd", str(fds[2]), "--iterator-fd", str(fds[3]),
                   "--hold-s", str(self.config.armer_hold_s),
                   "--stuck-s", str(self.config.armer_stuck_s)]
        if self.config.armer_log:
            command += ["--log", self.config.armer_log]
        self._armer = SpawnedProcess.spawn(command, fds)
        line = self._armer.stderr.readline()
        if not line.startswith("armer ready: "):
            self._armer.kill()
            raise RuntimeError(f"the armer did not start: {line}{self._armer.stderr.read()}")
        self.stats.armer_priority = line.removeprefix("armer ready: ").strip()
        # its later words (none, unless it fails) go where ours go
        threading.Thread(target=self._relay_armer_stderr, args=(self._armer,), name="tracer-armer-log",
                         daemon=True).start()

    @staticmethod
    def _relay_armer_stderr(armer: SpawnedProcess) -> None:
        for line in armer.stderr:
            sys.stderr.write(f"armer: {line}")

    def armer_alive(self) -> bool:
        """False once the armer has died."""
        return self._armer is None or self._armer.poll() is None

    def restart_armer_if_dead(self) -> bool:
        """Starts the armer again if it died (returns True then).  Its death
        detached the program (the kernel closed its link), but the state
        still says attached: it is cleared, and the epoch moved on, so that
        the workers alive now are flagged (bpf/arming.h), never silently thin."""
        if self.armer_alive():
            return False
        state = self._hooks
        if state.armed:
            state.armed = 0
            state.epoch += 1
            if state.attached_since_ns:
                state.attached_ns += time.clock_gettime_ns(time.CLOCK_MONOTONIC) - state.attached_since_ns
                state.attached_since_ns = 0
        self.stats.armer_restarts += 1
        self._start_armer()
        return True

    def hook_figures(self) -> dict[str, float]:
        """The armer's figures (on-demand mode; empty otherwise): whether the
        syscall program is attached now, how often and how long it was, and
        how long attaching took from the request."""
        state = self._hooks
        if state is None:
            return {}
        attaches = state.attaches
        return {"attached": float(state.armed), "attaches": float(attaches),
                "attached_seconds": state.attached_seconds(time.clock_gettime_ns(time.CLOCK_MONOTONIC)),
                "requests": float(state.requests), "workers": float(state.workers),
                "forced_detaches": float(state.forced_detaches),
                "attach_latency_max_seconds": state.attach_latency_max_ns / 1e9,
                "attach_latency_mean_seconds": state.attach_latency_sum_ns / attaches / 1e9 if attaches else 0.0}

    def _stop_armer(self) -> None:
        if self._armer is None:
            return
        self._armer.terminate()  # it detaches, then exits
        if not self._armer.wait(timeout_s=10):
            self._armer.kill()
            self._armer.wait(timeout_s=10)
        self._armer = None

    def close(self) -> None:
        self._stop_armer()
        if self._iterator_link >= 0:
            os.close(self._iterator_link)
            self._iterator_link = -1
        if self._hooks is not None:
            self._hooks = None
            self._hooks_mapping.close()
            self._hooks_mapping = None
        if self._bpf is not None:
            for flags in (self._tracked, self._cri_holders):
                if flags is not None:
                    flags.close()
            self._tracked = self._cri_holders = None
            self._bpf.cleanup()
            self._bpf = None
        if self._interrupt >= 0:
            os.close(self._interrupt)
            self._interrupt = -1

    def _wakeup_poll(self) -> select.poll | None:
        """A poll set that wakes on the ring buffer's wake-ups (the kernel side
        asks for one with each exec and exit event: a pod start begins with
        one) and on interrupt(); None if libbpf's epoll fd is out of reach."""
        try:
            # bcc's libbcc links libbpf.so.1, so it is loaded already.  (Not
            # ctypes.util.find_library: it forks ldconfig, and a fork in a
            # process where grpc runs upsets grpc's poller.)
            libbpf = ctypes.CDLL("libbpf.so.1")
            libbpf.ring_buffer__epoll_fd.argtypes = (ctypes.c_void_p,)
            epoll_fd = libbpf.ring_buffer__epoll_fd(self._bpf._ringbuf_manager)
        except (OSError, AttributeError):
            return None
        if epoll_fd < 0:
            return None
        poll = select.poll()
        poll.register(epoll_fd, select.POLLIN)
        poll.register(self._interrupt, select.POLLIN)
        return poll

    def interrupt(self) -> None:
        """Ends run()'s current wait at once (after setting its stop event)."""
        if self._interrupt >= 0:
            os.eventfd_write(self._interrupt, 1)

    def _configure_filters(self) -> None:
        comms = self._bpf[b"runtime_comms"]
        roles = comm_roles(self.config)
        if self.mode.mode is Mode.ALWAYS:  # the fallback tracks runtimes only
            roles = {comm: COMM_RUNTIME for comm, role in roles.items() if role & COMM_RUNTIME}
        for comm, role in roles.items():
            key = comms.Key()
            key.comm = comm.encode()[:15]
            comms[key] = ctypes.c_uint8(role)
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
        self.drain_began_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._bpf.ring_buffer_consume()
        batch, self._batch = self._batch, []
        self.on_batch(batch)  # also when empty: time moves on, the loss check runs
        return len(batch)

    def run(self, stop: threading.Event) -> None:
        """Drains on a timer (the kernel side does not wake us per event):
        every `drain_interval_s` while events arrive.  After an empty drain
        the wait doubles, up to `idle_drain_interval_s`, so that an idle
        node costs a few wake-ups a second; while idle, an exec or exit
        event (the kernel side asks for a wake-up with those) ends the wait
        at once, so a pod start's first events, and the runc bundles that
        must be read while they exist, are not kept waiting."""
        interval = self.config.drain_interval_s
        while not stop.is_set():
            if self.drain() or self._idle_poll is None:
                interval = self.config.drain_interval_s
                poll = self._busy_poll
            else:
                interval = min(2 * interval, self.config.idle_drain_interval_s)
                poll = self._idle_poll
            if any(fd == self._interrupt for fd, _ in poll.poll(interval * 1000)):
                os.eventfd_read(self._interrupt)
        self.drain()

    def new_losses(self) -> dict[int, int]:
        """Events lost in the kernel since the last call, by event type.

        Reads one counter (all types); the per-type counters only when it moved."""
        total = sum(self._bpf[b"lost"][ctypes.c_int(LOST_ALL_TYPES)])
        if total == self._lost_total_seen:
            return {}
        self._lost_total_seen = total
        totals: dict[int, int] = {}
        for etype, per_cpu in self._bpf[b"lost"].items():
            count = sum(per_cpu)
            if count and etype.value != LOST_ALL_TYPES:
                totals[etype.value] = count
        fresh = {t: n - self._lost_seen.get(t, 0) for t, n in totals.items() if n > self._lost_seen.get(t, 0)}
        self._lost_seen = totals
        self.stats.lost_by_type = totals
        return fresh

    def read_kernel_stats(self) -> dict[str, int]:
        """The kernel side's counters (CaptureStats.kernel_stats), read now."""
        self.stats.kernel_stats = {
            STAT_NAMES.get(k.value, str(k.value)): sum(v) for k, v in self._bpf[b"stats"].items() if sum(v)
        }
        return self.stats.kernel_stats

    def forget_stale_endpoints(self, known: set[int]) -> int:
        """Removes the kernel's endpoints that userspace never heard of (their
        SOCKET_OPEN was lost) and whose socket no longer exists: nothing else
        would ever remove them.  A socket that exists is kept, known or not
        (its SOCKET_OPEN may still be on its way).  Returns how many went."""
        unknown = {key.value for key in self._bpf[b"cri_endpoints"].keys()} - known
        if not unknown:
            return 0
        stale = unknown - {s.inode for s in unix_sockets()}  # read after the keys: a newer socket is not in them
        for inode in stale:
            self._forget_in_kernel(inode)
        self.stats.endpoints_reaped += len(stale)
        return len(stale)

    def _forget_in_kernel(self, inode: int) -> int:
        """Removes an endpoint from the kernel's maps; its fd (0 if the map
        did not hold it: its registration was refused or lost)."""
        key = ctypes.c_uint64(inode)
        table, fd = self._bpf[b"cri_endpoints"], 0
        try:
            fd = table[key].fd
            del table[key]
        except KeyError:
            pass
        try:
            del self._bpf[b"cri_gaps"][key]
        except KeyError:
            pass
        return fd

    def forget_endpoints(self, endpoints: list[tuple[int, int, SocketSide, int, str]], ktime_ns: int) -> list[bytes]:
        """Removes CRI endpoints that were closed without close(2) from the
        kernel's map, so that it never fills with dead sockets, and returns a
        SOCKET_CLOSE event for each, for the pipeline and the recording.

        `endpoints`: (inode, peer inode, side, holder tgid, holder comm).  A
        process that exits, or execs with the socket marked O_CLOEXEC, closes
        it without the close(2) that the BPF program watches."""
        closes = []
        for inode, peer_inode, side, tgid, comm in endpoints:
            fd = self._forget_in_kernel(inode)
            header = Header(type=EventType.SOCKET_CLOSE, size=0, cpu=0, ktime_ns=ktime_ns, pid=tgid, tgid=tgid,
                            ppid=0, start_ns=0, parent_start_ns=0, cgroup_id=0, cgroup_v1_id=0, ns=Namespaces(),
                            comm=comm)
            endpoint = SocketEndpoint(inode, peer_inode, fd, side)
            closes.append(encode_socket_close(SocketCloseEvent(header, endpoint)))
        self.stats.endpoints_reaped += len(endpoints)
        return closes

    def count_kernel_tables(self) -> dict[str, int]:
        """Entries in the BPF maps that userspace cannot bound by itself, and
        the ids flagged in the per-id arrays (a map walk each: call it
        seconds apart, not per batch)."""
        if self._bpf is None:
            return dict(self.stats.kernel_tables)
        self.stats.kernel_tables = {
            **{name: sum(1 for _ in self._bpf[name.encode()].keys()) for name in WATCHED_MAPS},
            "tracked": self._tracked.count(), "cri_tgids": self._cri_holders.count(),
        }
        return self.stats.kernel_tables

    # ---- self-check --------------------------------------------------------

    def _self_check(self) -> None:
        """Traces ourselves for one no-op unshare(0) and compares with /proc.

        Offsets from BTF are trusted only once the values they produce agree
        with what the kernel reports through /proc for this very process.
        """
        me = os.getpid()
        self._tracked[me] = True
        link = None
        if self._armed_program is not None:  # the armer is not there yet: attach it for the check
            link = attach_raw_tracepoint(self._armed_program.fd, "sys_exit")
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
            self._tracked[me] = False
            if link is not None:
                os.close(link)
        if sample is None:
            raise SelfCheckError("self-check: no event arrived from our own unshare(0)")
        problems = compare_with_proc(sample.header)
        if self.read_kernel_stats().get("registers_mismatch"):
            problems.append("bpf_task_pt_regs() does not find the registers the syscall program gets")
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
        snapshot = []
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for pid in sorted(seeded, key=lambda p: processes[p].start_ns):
            self._tracked[pid] = True
            snapshot.append(processes[pid].snapshot_event(now, processes))
        self.stats.seeded_processes = len(seeded)
        return snapshot

    def _seed_cri_sockets(self, processes: dict[int, "ProcInfo"]) -> list[bytes]:
        """Watches the runtime sockets; returns snapshot events for the
        connections that are already open (kubelet's, typically).

        Listening sockets need no seeding: the kernel side recognises them
        at accept by the path they are bound to."""
        paths = self._bpf[b"cri_paths"]
        for path in self.config.cri_sockets:
            for variant in path_variants(path):
                key = paths.Key()
                key.path = variant.encode()[:SOCKET_PATH_LEN - 1]
                paths[key] = ctypes.c_uint8(1)
        endpoints = scan_cri_sockets(list(self.config.cri_sockets))
        table = self._bpf[b"cri_endpoints"]
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        snapshot = []
        for existing in endpoints:
            side = SocketSide.CLIENT if existing.side == "client" else SocketSide.SERVER
            leaf = table.Leaf()
            leaf.inode, leaf.peer_inode, leaf.fd, leaf.side = existing.inode, existing.peer_inode, existing.fd, side
            table[ctypes.c_uint64(existing.inode)] = leaf
            self._cri_holders[existing.pid] = True
            if existing.pid in processes:
                snapshot.append(_socket_snapshot(existing, side, processes[existing.pid], now))
        return snapshot


def _socket_snapshot(existing: HeldSocket, side: SocketSide, holder: "ProcInfo", ktime_ns: int) -> bytes:
    header = Header(
        type=EventType.SOCKET_SNAPSHOT, size=0, cpu=0, ktime_ns=ktime_ns, pid=holder.pid, tgid=holder.pid,
        ppid=holder.ppid, start_ns=holder.start_ns, parent_start_ns=0, cgroup_id=holder.cgroup_id,
        cgroup_v1_id=0, ns=holder.namespaces, comm=holder.comm,
    )
    endpoint = SocketEndpoint(existing.inode, existing.peer_inode, existing.fd, side)
    return encode_socket_open(SocketOpenEvent(header, endpoint, holder.comm, existing.path))


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
