"""Which way the tracer hooks the kernel here (see bpf/tracer.bpf.c).

- ``on-demand``: the CRI bytes from the sock_send_length and sock_recv_length
  raw tracepoints, process life from the sched and cgroup tracepoints, and
  one sys_exit program that is attached only while the runtime works
  (tracer.kernel.armer).  A process that is not part of the runtime runs
  none of the tracer's programs on its syscalls.
- ``always``: the fallback, for kernels without those socket tracepoints
  (before Linux 6.3): sys_enter and sys_exit programs attached all the
  time; every syscall on the node takes the slow path.

``auto`` picks on-demand where the kernel has what it needs.  Pure: the
kernel's BTF says which tracepoints exist (every raw tracepoint has a
``btf_trace_<name>`` typedef there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from tracer.kernel.btf import Btf, BtfError
from tracer.kernel.offsets import btf_path

SOCKET_TRACEPOINTS = ("sock_send_length", "sock_recv_length")
# How the tracer is told which mode to use (the CLI's --syscall-programs).
ENV_MODE = "TRACER_SYSCALL_PROGRAMS"


class Mode(str, Enum):
    ON_DEMAND = "on-demand"
    ALWAYS = "always"


MODE_CHOICES = ("auto", Mode.ON_DEMAND.value, Mode.ALWAYS.value)


@dataclass(frozen=True)
class ModeChoice:
    mode: Mode
    reason: str

    def describe(self) -> str:
        if self.mode is Mode.ON_DEMAND:
            return (f"on-demand: CRI bytes from the socket tracepoints, the syscall program attached only while "
                    f"the runtime works ({self.reason})")
        return f"always: sys_enter/sys_exit programs attached all the time, every syscall on the node pays ({self.reason})"


def missing_socket_tracepoints(btf: Btf) -> list[str]:
    """The socket tracepoints this kernel lacks (raw tracepoints with the
    struct sock, the byte count and the flags)."""
    missing = []
    for name in SOCKET_TRACEPOINTS:
        try:
            if btf.tracepoint_arg_count(name) < 3:
                missing.append(name)
        except BtfError:
            missing.append(name)
    return missing


def choose_mode(requested: str = "auto", btf: Btf | None = None) -> ModeChoice:
    """The mode for `requested` ("auto", "on-demand", "always") on this kernel.
    Asking for on-demand where the kernel cannot is an error (ValueError)."""
    if requested == Mode.ALWAYS.value:
        return ModeChoice(Mode.ALWAYS, "asked for")
    if requested not in MODE_CHOICES:
        raise ValueError(f"unknown mode {requested!r} (one of {', '.join(MODE_CHOICES)})")
    try:
        missing = missing_socket_tracepoints(btf if btf is not None else Btf.load(btf_path()))
    except (OSError, BtfError) as error:
        missing, why = list(SOCKET_TRACEPOINTS), f"no BTF to tell: {error}"
    else:
        why = f"this kernel has no {' and no '.join(missing)} tracepoint"
    if not missing:
        return ModeChoice(Mode.ON_DEMAND, "this kernel has the sock_send_length and sock_recv_length tracepoints"
                          if requested == "auto" else "asked for")
    if requested == Mode.ON_DEMAND.value:
        raise ValueError(f"on-demand mode needs the socket tracepoints: {why}")
    return ModeChoice(Mode.ALWAYS, why)


def requested_mode() -> str:
    """$TRACER_SYSCALL_PROGRAMS, else auto."""
    return os.environ.get(ENV_MODE) or "auto"
