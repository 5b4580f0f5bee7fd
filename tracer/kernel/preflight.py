"""Before tracing: can it work here at all?  A clear refusal, not a crash.

Cheap checks only (no BPF program is loaded; `tracer doctor` does that):

- the effective capabilities: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN
  (which implies both) are needed to load and attach the programs;
  without CAP_SYS_ADMIN there are no network attributes (setns into a
  sandbox's network namespace), and without CAP_SYS_PTRACE no CRI spans
  for kubelet's connection (it predates the tracer and is found through
  /proc/<pid>/fd) and no network attributes: warnings only;
- kernel BTF, from which every struct offset comes ($TRACER_BTF_PATH or
  /sys/kernel/btf/vmlinux): it must exist and yield the offsets;
- tracefs: mounted (or mountable) with the tracepoints the programs use;
- kernel headers for bcc: found (matching, kheaders or a distro package).

`require_tracing()` raises CannotTrace with every problem found, each with
what to do about it; the daemon logs it and exits 1, `tracer record` prints
it.  docs/deployment.md ("Least privileges") says why each privilege is
needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CAP_DAC_OVERRIDE = 1
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
CAP_NAMES = {CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE", CAP_SYS_PTRACE: "CAP_SYS_PTRACE",
             CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}

# where bcc looks for tracepoints (it prefers debugfs's view when it exists)
TRACING_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# tracepoints every run needs (bpf/tracer.bpf.c attaches to these and more)
REQUIRED_TRACEPOINTS = ("sched/sched_process_exec", "sched/sched_process_exit", "syscalls/sys_enter_connect")
DOCS = "docs/deployment.md#least-privileges"


class CannotTrace(RuntimeError):
    """Tracing cannot work on this node; the message says why and what to do."""


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)   # any one of them: tracing cannot work
    warnings: list[str] = field(default_factory=list)   # tracing works, with less detail

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        lines = ["cannot trace on this node:", *(f"  - {p}" for p in self.problems),
                 f"`tracer doctor` checks each requirement in detail; {DOCS} says what the tracer needs and why."]
        return "\n".join(lines)


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    """The CapEff bit set of this process."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _has(capabilities: int, cap: int) -> bool:
    return bool(capabilities >> cap & 1)


def check_capabilities(capabilities: int, result: Preflight) -> None:
    admin = _has(capabilities, CAP_SYS_ADMIN)
    missing = [CAP_NAMES[c] for c in (CAP_BPF, CAP_PERFMON) if not _has(capabilities, c)]
    if missing and not admin:
        result.problems.append(
            f"capabilities: {' and '.join(missing)} (or CAP_SYS_ADMIN) not in the effective set "
            f"(CapEff {capabilities:#x}): the BPF programs cannot be loaded or attached; run as root with "
            f"BPF, PERFMON, SYS_ADMIN and SYS_PTRACE added")
        return
    if not admin:
        result.warnings.append("no CAP_SYS_ADMIN: no network attributes (setns into a sandbox's network "
                               "namespace is refused), and tracefs cannot be mounted if it is not already")
    if not _has(capabilities, CAP_SYS_PTRACE):
        result.warnings.append("no CAP_SYS_PTRACE: /proc/<pid>/fd and /proc/<pid>/ns of processes with more "
                               "capabilities (kubelet, containerd) cannot be read: no CRI spans for connections "
                               "opened before the tracer (kubelet's), no network attributes, and CRI sockets "
                               "closed at a client's exit are not reaped")


def check_btf(path: str, result: Preflight, load_offsets: Callable[[str], object]) -> None:
    from tracer.kernel.offsets import ENV_BTF_PATH

    if not Path(path).is_file():
        result.problems.append(
            f"kernel BTF: {path} does not exist: the kernel was built without CONFIG_DEBUG_INFO_BTF "
            f"(or /sys/kernel/btf is not mounted into the container); {ENV_BTF_PATH} may name a BTF file "
            f"for this kernel, e.g. from BTFhub")
        return
    try:
        load_offsets(path)
    except Exception as error:  # noqa: BLE001 - any failure is the same refusal, with its reason
        result.problems.append(f"kernel BTF: the struct offsets the tracer needs are not in {path}: "
                               f"{type(error).__name__}: {error}")


def check_tracefs(mount: Callable[[], tuple], tracing_dirs: tuple[str, ...], result: Preflight) -> None:
    checks = mount()  # mounts tracefs and debugfs where missing (needs CAP_SYS_ADMIN)
    for directory in tracing_dirs:
        if all((Path(directory) / "events" / tp).is_dir() for tp in REQUIRED_TRACEPOINTS):
            return
    details = "; ".join(c.detail for c in checks if not c.ok) or "mounted, but without the tracepoints"
    result.problems.append(
        f"tracefs: none of {', '.join(tracing_dirs)} has the tracepoints {', '.join(REQUIRED_TRACEPOINTS)} "
        f"({details}); mount it (`mount -t tracefs tracefs /sys/kernel/tracing`) or mount the host's into "
        f"the container, and check that the kernel has CONFIG_FTRACE_SYSCALLS")


def check_headers(find_headers: Callable[[], object], result: Preflight) -> None:
    if find_headers() is None:
        import os

        result.problems.append(
            f"kernel headers: none for {os.uname().release} (bcc compiles the programs against them): install "
            f"linux-headers (any version: struct layouts come from BTF) or load the kheaders module")


def preflight(*, capabilities: int | None = None, btf: str | None = None,
              load_offsets: Callable[[str], object] | None = None, mount: Callable[[], tuple] | None = None,
              tracing_dirs: tuple[str, ...] = TRACING_DIRS,
              find_headers: Callable[[], object] | None = None) -> Preflight:
    """Every check; each argument replaces what the check reads (for tests)."""
    from tracer.kernel import headers
    from tracer.kernel.offsets import btf_path, kernel_offsets

    result = Preflight()
    check_capabilities(effective_capabilities() if capabilities is None else capabilities, result)
    check_btf(btf or btf_path(), result, load_offsets or kernel_offsets)
    check_tracefs(mount or headers.mount_tracing_filesystems, tracing_dirs, result)
    check_headers(find_headers or headers.find_headers, result)
    return result


def require_tracing(**overrides) -> Preflight:
    """Raises CannotTrace unless tracing can work; returns the warnings."""
    result = preflight(**overrides)
    if not result.ok:
        raise CannotTrace(result.message())
    return result
