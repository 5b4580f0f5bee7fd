"""What this kernel and machine support, for `tracer doctor`: small BPF
programs loaded for real (bpf/probes/doctor.bpf.c), BTF, offsets read back
in the kernel, headers, memlock, the cgroup layout and the runtime sockets.

bcc imports are local to the functions that need them: the pure core
(BTF, offsets, event decoding) must stay importable without bcc.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import re
import resource
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tracer.kernel.cgroups import CgroupLayout, cgroup_layout
from tracer.kernel.checks import Check, Status
from tracer.kernel.headers import (
    KernelHeaders,
    mount_tracing_filesystems,
    prepare_headers,
)
from tracer.kernel.modes import Mode, choose_mode, requested_mode
from tracer.kernel.offsets import ENV_BTF_PATH, KernelOffsets, btf_path, kernel_offsets
from tracer.kernel.sources import BPF_DIR, DOCTOR_PROBES
from tracer.runtimes import DEFAULT_RUNTIME_SOCKETS

if TYPE_CHECKING:
    from bcc import BPF






@dataclass(frozen=True)
class RuntimeSocket:
    runtime: str
    path: str
    found: bool


@dataclass(frozen=True)
class FeatureReport:
    kernel_release: str
    # The checks, in the order the doctor prints them.
    capabilities: Check
    btf: Check
    offsets: Check  # whether struct offsets come from BTF
    offsets_in_kernel: Check  # the offsets, read by a BPF program, match /proc
    headers: Check
    tracefs: Check
    debugfs: Check
    tracepoints: Check
    raw_tracepoints: Check
    socket_tracepoints: Check  # sock_send_length, with the syscall's registers
    ring_buffer: Check
    uprobes: Check
    kprobes: Check
    fentry: Check
    memlock: Check
    syscall_programs: Check  # the mode the tracer will use (tracer.kernel.modes)
    cgroups: CgroupLayout
    runtime_sockets: tuple[RuntimeSocket, ...]
    network_namespace: Check  # whose unix sockets sock_diag shows: the runtime's listener among them?
    capability_warnings: tuple[str, ...]  # what is lost for want of SYS_ADMIN or SYS_PTRACE
    header_info: KernelHeaders | None
    kernel_offsets: KernelOffsets | None
    memlock_bytes: tuple[int, int]  # soft, hard; -1 is unlimited

    def checks(self) -> dict[str, Check]:
        """Every Check, by field name, in report order."""
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), Check)}

    def warnings(self) -> list[str]:
        """What limits the traces without stopping them (the doctor's verdict lists them)."""
        found = [s for s in self.runtime_sockets if s.found]
        warnings = list(self.capability_warnings)
        if not found:
            paths = ", ".join(s.path for s in self.runtime_sockets)
            warnings.append(f"no container runtime socket found ({paths}): is the runtime running? Without "
                            "one no pod starts, and no CRI calls are traced; if its socket is elsewhere, name it "
                            "(--socket here, --cri-socket or TRACER_CRI_SOCKETS for record and daemon)")
        if self.network_namespace.status in (Status.UNAVAILABLE, Status.MISSING):
            warnings.append(f"network namespace: {self.network_namespace.detail}")
        return warnings


    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``tracer doctor --json``)."""
        return _jsonable(self)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        data = {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, Check):
            data["ok"] = value.ok
        return data
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def probe_features(extra_sockets: Iterable[str] = ()) -> FeatureReport:
    """Probe what this kernel and machine support, loading real BPF programs
    where that is the only reliable test.  Mounts tracefs/debugfs if missing."""
    tracefs, debugfs = mount_tracing_filesystems()
    btf_file = btf_path()
    btf = (
        Check(Status.OK, btf_file)
        if Path(btf_file).is_file()
        else Check(Status.MISSING, f"{btf_file} not found (kernel built without CONFIG_DEBUG_INFO_BTF; "
                                   f"{ENV_BTF_PATH} may name a BTF file for this kernel)")
    )
    offsets, offsets_check = _probe_offsets()
    header_info, headers_check = _probe_headers()

    skip = Check(Status.SKIPPED, "not tried: bcc cannot compile without kernel headers")
    bpf_checks: dict[str, Check] = {}
    for name, probe in (
        ("tracepoints", _probe_tracepoint),
        ("raw_tracepoints", _probe_raw_tracepoint),
        ("uprobes", _probe_uprobe),
        ("ring_buffer", _probe_ring_buffer),
        ("kprobes", _probe_kprobe),
        ("fentry", _probe_fentry),
    ):
        bpf_checks[name] = _guarded(probe) if headers_check.ok else skip
    if not headers_check.ok:
        offsets_in_kernel = socket_tracepoints = skip
    elif offsets is None:
        offsets_in_kernel = socket_tracepoints = Check(Status.SKIPPED, "not tried: no BTF offsets")
    else:
        offsets_in_kernel = _guarded(lambda: _probe_offsets_in_kernel(offsets))
        socket_tracepoints = _guarded(lambda: _probe_socket_tracepoint(offsets))

    memlock_bytes = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    capabilities, capability_warnings = capabilities_check()
    runtime_sockets = find_runtime_sockets(extra_sockets)
    return FeatureReport(
        kernel_release=os.uname().release,
        capabilities=capabilities,
        capability_warnings=capability_warnings,
        network_namespace=network_namespace_check(runtime_sockets),
        btf=btf,
        offsets=offsets_check,
        tracefs=tracefs,
        debugfs=debugfs,
        headers=headers_check,
        offsets_in_kernel=offsets_in_kernel,
        socket_tracepoints=socket_tracepoints,
        memlock=_memlock_check(memlock_bytes),
        syscall_programs=_mode_check(socket_tracepoints),
        cgroups=cgroup_layout(),
        runtime_sockets=runtime_sockets,
        header_info=header_info,
        kernel_offsets=offsets,
        memlock_bytes=memlock_bytes,
        **bpf_checks,
    )


def capabilities_check(capabilities: int | None = None) -> tuple[Check, tuple[str, ...]]:
    """The tracer's four capabilities in this process's effective set, and
    what is lost without the optional ones (tracer.kernel.preflight's rules)."""
    from tracer.kernel.preflight import (
        CAP_BPF,
        CAP_PERFMON,
        CAP_SYS_ADMIN,
        CAP_SYS_PTRACE,
        Preflight,
        check_capabilities,
        effective_capabilities,
    )

    effective = effective_capabilities() if capabilities is None else capabilities
    wanted = {"BPF": CAP_BPF, "PERFMON": CAP_PERFMON, "SYS_ADMIN": CAP_SYS_ADMIN, "SYS_PTRACE": CAP_SYS_PTRACE}
    have = [name for name, bit in wanted.items() if effective >> bit & 1]
    lacking = [name for name in wanted if name not in have]
    result = Preflight()
    check_capabilities(effective, result)
    if lacking:
        detail = f"has {', '.join(have) or 'none'} of the four the tracer uses; lacks {', '.join(lacking)}"
    else:
        detail = f"has {', '.join(have)}: the four the tracer uses"
    detail += f" (CapEff {effective:#x})"
    if result.problems:
        return Check(Status.MISSING, detail + ": the BPF programs cannot be loaded"), ()
    if result.warnings:
        return Check(Status.OK, detail + ": tracing works, with less detail (below)"), tuple(result.warnings)
    return Check(Status.OK, detail), ()


def network_namespace_check(sockets: Iterable[RuntimeSocket], own: str = "/proc/self/ns/net",
                            host: str = "/proc/1/ns/net", listeners: Callable[[], set[str]] | None = None) -> Check:
    """Whose unix sockets this process sees with sock_diag (it lists those
    of its own network namespace only): the runtime's listening socket and
    kubelet's connection to it must be among them for CRI calls to be traced."""
    from tracer.kernel.sockets import normalize_socket_path, path_variants, unix_sockets

    try:
        same_as_host = os.stat(own).st_ino == os.stat(host).st_ino
        where = "the host's (that of PID 1)" if same_as_host else "not the host's (PID 1's differs)"
    except OSError as error:
        same_as_host, where = None, f"unknown whether the host's ({host}: {error.strerror})"
    try:
        visible = listeners() if listeners is not None else {
            normalize_socket_path(s.path) for s in unix_sockets() if s.path}
    except OSError as error:
        return Check(Status.UNAVAILABLE, f"{where}; sock_diag refused ({error.strerror}): existing CRI "
                                         "connections (kubelet's) cannot be found")
    def seen(path: str) -> bool:
        return any(normalize_socket_path(variant) in visible for variant in path_variants(path))

    found = [s for s in sockets if s.found]
    hidden = [s.path for s in found if not seen(s.path)]
    shown = [s.path for s in found if seen(s.path)]
    if hidden:
        return Check(Status.UNAVAILABLE, f"{where}; the listener of {', '.join(hidden)} is in another network "
                                         "namespace, so kubelet's CRI calls cannot be traced: run in the node's "
                                         "network namespace (hostNetwork: true)")
    if shown:
        return Check(Status.OK, f"{where}; sock_diag shows the listener of {', '.join(shown)}")
    if same_as_host is None:
        return Check(Status.SKIPPED, f"{where}; no runtime socket to look for")
    if not same_as_host:
        return Check(Status.UNAVAILABLE, f"{where}: a runtime's listener and kubelet's connection on the host "
                                         "would be invisible to sock_diag: run in the node's network namespace "
                                         "(hostNetwork: true)")
    return Check(Status.OK, f"{where}; no runtime socket to look for")


def verdict(report: FeatureReport) -> tuple[bool, list[str]]:
    """Tracing can work iff struct offsets resolved from BTF, kernel headers
    were found, and tracepoints, raw tracepoints and the ring buffer work.
    Warnings (no runtime socket, capabilities or a network namespace that
    cost detail) follow; they do not change the answer."""
    required = {
        "struct offsets from BTF": report.offsets,
        "kernel headers for bcc": report.headers,
        "tracepoints": report.tracepoints,
        "raw tracepoints": report.raw_tracepoints,
        "ring buffer": report.ring_buffer,
    }
    failed = [f"  {name}: {check.status} ({check.detail})" for name, check in required.items() if not check.ok]
    if not report.capabilities.ok:
        failed.insert(0, f"  capabilities: {report.capabilities.detail}")
    if failed:
        return False, ["tracing cannot work; missing requirements:", *failed]
    lines = [f"tracing can work: {', '.join(required)} are OK",
             f"syscall programs: {report.syscall_programs.detail}"]
    lines += [f"WARNING: {warning}" for warning in report.warnings()]
    optional = {"kprobes": report.kprobes, "fentry": report.fentry, "uprobes": report.uprobes}
    lacking = [name for name, check in optional.items() if not check.ok]
    if lacking:
        lines.append(f"not needed by the tracer, and not available here: {', '.join(lacking)}")
    return True, lines


def _guarded(probe: Callable[[], Check]) -> Check:
    """Run one probe; any failure becomes its UNAVAILABLE result, together
    with what libbcc/clang printed (their diagnostics go to fds 1 and 2)."""
    captured = _NativeOutput()
    try:
        with captured:
            return probe()
    except Exception as exc:  # noqa: BLE001 - each probe reports its own failure
        detail = str(exc) or type(exc).__name__
        if captured.text.strip():
            detail += ": " + _tail(captured.text)
        # bcc says "Need super-user privileges" for any EPERM, misleading for root
        detail = detail.replace("Need super-user privileges to run", "the kernel refused it (EPERM)")
        return Check(Status.UNAVAILABLE, detail)


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class _NativeOutput:
    """Redirects fds 1 and 2 to a temporary file for the duration."""

    text = ""

    def __enter__(self) -> _NativeOutput:
        sys.stdout.flush()
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # libbcc writes through C stdio, which buffers when not on a tty.
        ctypes.CDLL(None).fflush(None)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()


def _probe_offsets() -> tuple[KernelOffsets | None, Check]:
    try:
        offsets = kernel_offsets()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return None, Check(Status.MISSING, f"struct offsets not resolved from BTF: {exc}")
    sample = ", ".join(
        f"{name}={getattr(offsets, name)}"
        for name in ("task_tgid", "task_real_parent", "task_nsproxy", "task_mm", "ns_common_inum")
    )
    return offsets, Check(Status.OK, f"from BTF ({btf_path()}), not headers: {sample}")


def _probe_headers() -> tuple[KernelHeaders | None, Check]:
    try:
        headers = prepare_headers()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return None, Check(Status.MISSING, str(exc))
    return headers, Check(Status.OK, headers.describe())


def _load(probe: str, *cflags: str) -> BPF:
    """Compile and load doctor.bpf.c with only the ``PROBE_<probe>`` part."""
    from bcc import BPF

    return BPF(
        src_file=str(DOCTOR_PROBES),
        cflags=[f"-DPROBE_{probe}", f"-DTARGET_TGID={os.getpid()}", f"-I{BPF_DIR}", *cflags],
    )


def _hits(bpf: BPF) -> int:
    return int(bpf["hits"][ctypes.c_int(0)].value)


def _probe_tracepoint() -> Check:
    tracepoint = "syscalls:sys_enter_getppid"
    with _load("TRACEPOINT") as bpf:
        bpf.attach_tracepoint(tp=tracepoint, fn_name="on_tracepoint")
        os.getppid()
        hits = _hits(bpf)
    if not hits:
        return Check(Status.UNAVAILABLE, f"attached to {tracepoint}, but it did not fire")
    return Check(Status.OK, f"loaded, attached to {tracepoint} and fired")


def _probe_raw_tracepoint() -> Check:
    with _load("RAW_TRACEPOINT") as bpf:
        bpf.attach_raw_tracepoint(tp="sys_enter", fn_name="on_raw_tracepoint")
        os.getppid()
        hits = _hits(bpf)
    if not hits:
        return Check(Status.UNAVAILABLE, "attached to raw tracepoint sys_enter, but it did not fire")
    return Check(Status.OK, "loaded, attached to raw tracepoint sys_enter and fired")


def _probe_uprobe() -> Check:
    from bcc import BPF

    found = BPF.find_library("c")
    if not found:
        return Check(Status.MISSING, "libc not found in the ld.so cache")
    libc = found.decode()
    with _load("UPROBE") as bpf:
        bpf.attach_uprobe(name=libc, sym="getpid", fn_name="on_uprobe", pid=os.getpid())
        os.getpid()  # CPython calls libc's getpid()
        hits = _hits(bpf)
    if not hits:
        return Check(Status.UNAVAILABLE, f"attached to {libc}:getpid, but it did not fire")
    return Check(Status.OK, f"attached to {libc}:getpid and fired")


def _probe_ring_buffer() -> Check:
    received: list[int] = []
    with _load("RINGBUF") as bpf:
        bpf["events"].open_ring_buffer(
            lambda _ctx, data, _size: received.append(ctypes.cast(data, ctypes.POINTER(ctypes.c_uint32))[0])
        )
        bpf.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="on_ringbuf_tracepoint")
        os.getppid()
        bpf.ring_buffer_poll(timeout=100)
    if os.getpid() not in received:
        return Check(Status.UNAVAILABLE, "BPF_RINGBUF_OUTPUT map created, but no event arrived")
    return Check(Status.OK, "BPF_RINGBUF_OUTPUT map created; an event went through it")


def _probe_socket_tracepoint(offsets: KernelOffsets) -> Check:
    """A raw tracepoint on sock_send_length fires for a unix socket's send
    and finds the syscall's arguments in its registers."""
    import socket as socket_module

    with _load("SOCKET_TRACEPOINT", f"-DOFF_PT_REGS_DI={offsets.pt_regs_di}") as bpf:
        bpf.attach_raw_tracepoint(tp="sock_send_length", fn_name="on_sock_send_length")
        ours, theirs = socket_module.socketpair()
        with ours, theirs:
            ours.send(b"doctor")
            sends = bpf["sends"]
            sent, fd = sends[ctypes.c_int(0)].value, sends[ctypes.c_int(1)].value
            expected_fd = ours.fileno()
    if sent != len(b"doctor"):
        return Check(Status.UNAVAILABLE, f"attached to raw tracepoint sock_send_length, but it saw {sent} bytes "
                                         f"of a {len(b'doctor')}-byte send")
    if fd != expected_fd:
        return Check(Status.UNAVAILABLE, f"sock_send_length fired, but the syscall's registers gave fd {fd}, "
                                         f"not {expected_fd}")
    return Check(Status.OK, "raw tracepoint sock_send_length fired for a unix socket's send; the syscall's "
                            "arguments read from its registers (bpf_task_pt_regs)")


def _mode_check(socket_tracepoints: Check) -> Check:
    """The mode `tracer record` and `tracer daemon` will use here (as asked by
    $TRACER_SYSCALL_PROGRAMS, else auto), and why."""
    try:
        choice = choose_mode(requested_mode())
    except ValueError as error:
        return Check(Status.UNAVAILABLE, str(error))
    if choice.mode is Mode.ON_DEMAND and not socket_tracepoints.ok:
        return Check(Status.UNAVAILABLE, f"{choice.describe()}; but the socket tracepoint probe failed: "
                                         f"{socket_tracepoints.detail}")
    return Check(Status.OK, choice.describe())


def kernel_config() -> dict[str, str] | None:
    """The running kernel's config from /proc/config.gz or /boot/config-<release>."""
    try:
        text = gzip.open("/proc/config.gz", "rt").read()
    except OSError:
        try:
            text = Path(f"/boot/config-{os.uname().release}").read_text()
        except OSError:
            return None
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.MULTILINE))


def _probe_kprobe() -> Check:
    config = kernel_config()
    facts = []
    if config is not None:
        value = config.get("CONFIG_KPROBES")
        facts.append(f"CONFIG_KPROBES={value}" if value else "CONFIG_KPROBES is not set")
    tracefs = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    kprobe_events = [path for path in tracefs if Path(path, "kprobe_events").exists()]
    facts.append(f"{kprobe_events[0]}/kprobe_events exists" if kprobe_events else "no kprobe_events in tracefs")
    try:
        with _load("KPROBE") as bpf:
            event = bpf.get_syscall_fnname("getppid").decode()
            bpf.attach_kprobe(event=event, fn_name="on_kprobe")
            os.getppid()
            hits = _hits(bpf)
    except Exception as exc:  # noqa: BLE001 - the attempt's failure is the finding
        return Check(Status.UNAVAILABLE, f"{'; '.join(facts)}; attach failed: {exc}")
    status = Status.OK if hits else Status.UNAVAILABLE
    return Check(status, f"{'; '.join(facts)}; attached to {event}, fired: {bool(hits)}")


def _probe_fentry() -> Check:
    from bcc import BPF

    if not BPF.support_kfunc():
        return Check(Status.UNAVAILABLE, "bcc sees no kernel trampoline support (bpf_trampoline_link_prog)")
    try:
        # bcc loads and attaches the KFUNC_PROBE while constructing the module.
        with _load("FENTRY"):
            pass
    except Exception as exc:  # noqa: BLE001 - the attempt's failure is the finding
        message = str(exc)
        if "super-user" in message:  # bcc's wording for any EPERM, even for root with every capability
            message = ("the kernel refused to load the fentry program (EPERM) although this process may load BPF "
                       "programs: lockdown or a kernel policy forbids fentry here")
        return Check(Status.UNAVAILABLE, f"fentry on vfs_read: {message}")
    return Check(Status.OK, "fentry program loaded and attached to vfs_read")


def _probe_offsets_in_kernel(offsets: KernelOffsets) -> Check:
    """Read this process's own task_struct at the BTF offsets and compare with /proc."""
    with open(DOCTOR_PROBES, "rb") as held:
        fd = held.fileno()
        with _load("OFFSETS", *offsets.as_cflags(), f"-DCHECK_FD={fd}") as bpf:
            bpf.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="on_offsets_tracepoint")
            os.getppid()
            sample = bpf["samples"][ctypes.c_int(0)]
        expected = _expected_sample(fd)
    got = {
        "pid": sample.pid,
        "tgid": sample.tgid,
        "real_parent tgid": sample.parent_tgid,
        "group_leader pid": sample.leader_pid,
        "start_boottime (clock ticks)": sample.start_boottime // (10**9 // os.sysconf("SC_CLK_TCK")),
        "start_time <= start_boottime": 0 < sample.start_time <= sample.start_boottime,
        "exit_code": sample.exit_code,
        **{f"{ns} ns inum": getattr(sample, f"ns_{ns}") for ns in _NAMESPACES},
        "argv prefix": bytes(sample.argv)[: len(expected["argv prefix"])],
        "arg_end - arg_start": sample.arg_len,
        "env_end - env_start": sample.env_len,
        "fd dentry name": bytes(sample.fd_name).split(b"\0")[0].decode(errors="replace"),
        "fd parent dentry name": bytes(sample.fd_parent_name).split(b"\0")[0].decode(errors="replace"),
        "fd superblock magic": sample.s_magic,
        "memory cgroup kernfs id": sample.memcg_kn_id,
    }
    wrong = [f"{k}: got {got[k]!r}, want {v!r}" for k, v in expected.items() if v is not None and got[k] != v]
    if wrong:
        return Check(Status.UNAVAILABLE, "offsets read wrong values: " + "; ".join(wrong))
    compared = sum(v is not None for v in expected.values())
    return Check(
        Status.OK,
        f"{compared} fields of this process read at BTF offsets by a BPF program match /proc "
        "(pids, parent, start time, namespaces, argv, open file path, memory cgroup, ...)",
    )


_NAMESPACES = ("uts", "ipc", "mnt", "pid_for_children", "net", "cgroup")


def _expected_sample(fd: int) -> dict[str, Any]:
    """What the offsets sample must contain, from /proc and the filesystem.
    None marks a value this machine cannot provide (not compared)."""
    stat_fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    cmdline = Path("/proc/self/cmdline").read_bytes()
    environ = Path("/proc/self/environ").read_bytes()
    fd_path = Path(os.readlink(f"/proc/self/fd/{fd}"))
    return {
        "pid": threading.get_native_id(),  # task_struct.pid is the thread id
        "tgid": os.getpid(),
        "real_parent tgid": os.getppid(),
        "group_leader pid": os.getpid(),
        "start_boottime (clock ticks)": int(stat_fields[19]),  # field 22: starttime
        "start_time <= start_boottime": True,
        "exit_code": 0,
        **{f"{ns} ns inum": os.stat(f"/proc/self/ns/{ns}").st_ino for ns in _NAMESPACES},
        "argv prefix": cmdline[:64],
        "arg_end - arg_start": len(cmdline),
        "env_end - env_start": len(environ),
        "fd dentry name": fd_path.name,
        "fd parent dentry name": fd_path.parent.name,
        "fd superblock magic": _statfs_type(fd_path),
        "memory cgroup kernfs id": _memory_cgroup_inode(),
    }


def _statfs_type(path: Path) -> int:
    # struct statfs starts with f_type (a long) on Linux; Python has no statfs.
    buf = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        raise OSError(ctypes.get_errno(), f"statfs {path}")
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder)


def _memory_cgroup_inode() -> int | None:
    """Inode of the directory of this process's memory cgroup, which is the
    kernfs node id on 64-bit kernels; None if no memory controller is mounted."""
    layout = cgroup_layout()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            mountpoint = next((m.mountpoint for m in layout.v1 if "memory" in m.options), None)
            if mountpoint:
                return os.stat(mountpoint + path).st_ino
        elif hierarchy == "0" and layout.v2:
            root = Path(layout.v2)
            if "memory" not in _words(root / "cgroup.controllers"):
                continue
            # A v2 cgroup without memory enabled shares its nearest such ancestor's css.
            cgroup = Path(layout.v2 + path)
            while cgroup != root and "memory" not in _words(cgroup.parent / "cgroup.subtree_control"):
                cgroup = cgroup.parent
            return os.stat(cgroup).st_ino
    return None


def _words(path: Path) -> list[str]:
    return path.read_text().split()


def _memlock_check(limits: tuple[int, int]) -> Check:
    soft, hard = (
        "unlimited" if value == resource.RLIM_INFINITY else f"{value // 1024} KiB" for value in limits
    )
    text = f"RLIMIT_MEMLOCK soft {soft}, hard {hard}"
    major, minor = (int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    if (major, minor) >= (5, 11):
        return Check(Status.OK, f"{text}; kernel >= 5.11 charges BPF memory to the memory cgroup instead")
    return Check(Status.OK, f"{text}; this kernel charges BPF maps to this limit, large maps may fail")


def find_runtime_sockets(extra: Iterable[str] = ()) -> tuple[RuntimeSocket, ...]:
    """Known container runtime sockets plus ``extra``, each marked found or not."""
    candidates = [*DEFAULT_RUNTIME_SOCKETS.items(), *(("given", path) for path in extra)]
    return tuple(RuntimeSocket(runtime, path, _is_socket(path)) for runtime, path in candidates)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
