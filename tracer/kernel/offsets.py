"""Kernel struct offsets taken from BTF, handed to the BPF C code as macros.

The BPF programs cannot use the struct definitions of the installed kernel
headers: on the target machines those headers belong to another kernel
(Debian 6.1 headers on a 6.18 kernel) and their layouts are wrong.  Instead
each field is read with ``bpf_probe_read_kernel(&v, sizeof(v), (void *)p +
OFF_X)`` where ``OFF_X`` comes from :meth:`KernelOffsets.as_cflags`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tracer.kernel.btf import VMLINUX_BTF, Btf, BtfKind, BtfLookupError


@dataclass(frozen=True)
class KernelOffsets:
    """Byte offsets (and one enum value) of the kernel fields the tracer reads."""

    task_pid: int
    task_tgid: int
    task_real_parent: int
    task_group_leader: int
    task_start_time: int  # u64 ns, CLOCK_MONOTONIC
    task_start_boottime: int
    task_nsproxy: int
    task_mm: int
    task_exit_code: int
    task_files: int
    task_cgroups: int  # struct css_set *
    task_comm: int
    nsproxy_uts_ns: int
    nsproxy_ipc_ns: int
    nsproxy_mnt_ns: int
    nsproxy_pid_ns_for_children: int
    nsproxy_net_ns: int
    nsproxy_cgroup_ns: int
    uts_ns_ns: int  # struct ns_common inside each namespace struct
    ipc_ns_ns: int
    mnt_ns_ns: int
    pid_ns_ns: int
    net_ns: int
    cgroup_ns_ns: int
    ns_common_inum: int
    mm_arg_start: int
    mm_arg_end: int
    mm_env_start: int
    mm_env_end: int
    files_fdt: int
    fdtable_fd: int
    fdtable_max_fds: int
    file_f_path: int
    path_dentry: int
    file_f_inode: int
    inode_i_sb: int
    super_block_s_magic: int
    dentry_d_name: int
    qstr_name: int
    dentry_d_parent: int
    css_set_subsys: int  # array of struct cgroup_subsys_state *
    css_cgroup: int
    cgroup_kn: int
    kernfs_node_id: int
    memory_cgrp_id: int  # index into css_set.subsys, not an offset
    inode_i_ino: int
    file_private_data: int  # struct socket * for a socket's file
    socket_sk: int
    unix_sock_peer: int  # struct sock *: the other end of a unix stream
    sock_sk_socket: int
    socket_alloc_vfs_inode: int  # a socket's inode sits right after it
    pt_regs_di: int  # x86-64 syscall arguments 1-4 and the syscall number
    pt_regs_si: int
    pt_regs_dx: int
    pt_regs_r10: int
    pt_regs_orig_ax: int
    task_thread_status: int  # thread_info.status: TS_COMPAT marks a 32-bit syscall
    inode_i_mode: int
    sock_family: int  # sock_common.skc_family
    unix_sock_addr: int  # struct unix_address *: the bound name
    unix_address_name: int  # struct sockaddr_un
    linux_binprm_filename: int
    cgroup_root: int  # struct cgroup_root *
    cgroup_root_hierarchy_id: int
    cgroup_level: int
    task_signal: int
    signal_oom_score_adj: int
    mm_total_vm: int
    mm_rss_stat: int
    rss_counter_stride: int  # computed: bytes from one mm counter to the next
    rss_counter_value: int  # computed: the counter's value within one
    mm_filepages: int  # enum values: indexes into mm_struct.rss_stat
    mm_anonpages: int
    mm_shmempages: int
    task_flags: int  # PF_KTHREAD: a kernel thread has no syscall registers
    sock_type: int  # SOCK_STREAM: CRI connections are streams
    # Optional (OPTIONAL_PATHS): -1 where this kernel lacks the field; the
    # code that needs one is compiled out, on the safe side.
    task_ioac_syscw: int = -1  # write syscalls made (CONFIG_TASK_XACCT)
    mnt_ns_event: int = -1  # bumped by every mount change in the namespace

    @classmethod
    def from_btf(cls, btf: Btf) -> KernelOffsets:
        values = {name: btf.offset_of(struct, path) for name, (struct, path) in MEMBER_PATHS.items()}
        for name, (struct, path) in OPTIONAL_PATHS.items():
            try:
                values[name] = btf.offset_of(struct, path)
            except BtfLookupError:
                values[name] = -1
        values["memory_cgrp_id"] = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")
        if btf.member_kind("mm_struct", "rss_stat") == BtfKind.ARRAY:  # 6.2+: percpu_counter rss_stat[]
            values["rss_counter_stride"] = btf.sizeof("percpu_counter")
            values["rss_counter_value"] = btf.member_offset("percpu_counter", "count")
        else:  # struct mm_rss_stat { atomic_long_t count[]; }
            values["rss_counter_stride"], values["rss_counter_value"] = 8, 0
        for name in ("MM_FILEPAGES", "MM_ANONPAGES", "MM_SHMEMPAGES"):
            values[name.lower()] = btf.enumerator_value(name)
        # The raw sched_process_exit tracepoint says whether the thread group
        # is gone only since the kernel passes group_dead (the BPF reads args[1]).
        if btf.tracepoint_arg_count("sched_process_exit") < 2:
            raise BtfLookupError("sched_process_exit has no group_dead argument on this kernel")
        return cls(**values)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def as_cflags(self) -> list[str]:
        """``-DOFF_<FIELD>=<value>`` for every field, e.g. ``-DOFF_TASK_TGID=1268``."""
        return [f"-DOFF_{f.name.upper()}={getattr(self, f.name)}" for f in fields(self)]


# Where each offset field lives: (struct, dotted member path within it).
# Paths may cross anonymous structs/unions; the offsets are absolute within
# the named struct.
MEMBER_PATHS: dict[str, tuple[str, str]] = {
    "task_pid": ("task_struct", "pid"),
    "task_tgid": ("task_struct", "tgid"),
    "task_real_parent": ("task_struct", "real_parent"),
    "task_group_leader": ("task_struct", "group_leader"),
    "task_start_time": ("task_struct", "start_time"),
    "task_start_boottime": ("task_struct", "start_boottime"),
    "task_nsproxy": ("task_struct", "nsproxy"),
    "task_mm": ("task_struct", "mm"),
    "task_exit_code": ("task_struct", "exit_code"),
    "task_files": ("task_struct", "files"),
    "task_cgroups": ("task_struct", "cgroups"),
    "task_comm": ("task_struct", "comm"),
    "nsproxy_uts_ns": ("nsproxy", "uts_ns"),
    "nsproxy_ipc_ns": ("nsproxy", "ipc_ns"),
    "nsproxy_mnt_ns": ("nsproxy", "mnt_ns"),
    "nsproxy_pid_ns_for_children": ("nsproxy", "pid_ns_for_children"),
    "nsproxy_net_ns": ("nsproxy", "net_ns"),
    "nsproxy_cgroup_ns": ("nsproxy", "cgroup_ns"),
    "uts_ns_ns": ("uts_namespace", "ns"),
    "ipc_ns_ns": ("ipc_namespace", "ns"),
    "mnt_ns_ns": ("mnt_namespace", "ns"),
    "pid_ns_ns": ("pid_namespace", "ns"),
    "net_ns": ("net", "ns"),
    "cgroup_ns_ns": ("cgroup_namespace", "ns"),
    "ns_common_inum": ("ns_common", "inum"),
    "mm_arg_start": ("mm_struct", "arg_start"),
    "mm_arg_end": ("mm_struct", "arg_end"),
    "mm_env_start": ("mm_struct", "env_start"),
    "mm_env_end": ("mm_struct", "env_end"),
    "files_fdt": ("files_struct", "fdt"),
    "fdtable_fd": ("fdtable", "fd"),
    "fdtable_max_fds": ("fdtable", "max_fds"),
    "file_f_path": ("file", "f_path"),
    "path_dentry": ("path", "dentry"),
    "file_f_inode": ("file", "f_inode"),
    "inode_i_sb": ("inode", "i_sb"),
    "super_block_s_magic": ("super_block", "s_magic"),
    "dentry_d_name": ("dentry", "d_name"),
    "qstr_name": ("qstr", "name"),
    "dentry_d_parent": ("dentry", "d_parent"),
    "css_set_subsys": ("css_set", "subsys"),
    "css_cgroup": ("cgroup_subsys_state", "cgroup"),
    "cgroup_kn": ("cgroup", "kn"),
    "kernfs_node_id": ("kernfs_node", "id"),
    "inode_i_ino": ("inode", "i_ino"),
    "file_private_data": ("file", "private_data"),
    "socket_sk": ("socket", "sk"),
    "unix_sock_peer": ("unix_sock", "peer"),
    "sock_sk_socket": ("sock", "sk_socket"),
    "socket_alloc_vfs_inode": ("socket_alloc", "vfs_inode"),
    "pt_regs_di": ("pt_regs", "di"),
    "pt_regs_si": ("pt_regs", "si"),
    "pt_regs_dx": ("pt_regs", "dx"),
    "pt_regs_r10": ("pt_regs", "r10"),
    "pt_regs_orig_ax": ("pt_regs", "orig_ax"),
    "task_thread_status": ("task_struct", "thread_info.status"),
    "inode_i_mode": ("inode", "i_mode"),
    "sock_family": ("sock", "__sk_common.skc_family"),
    "unix_sock_addr": ("unix_sock", "addr"),
    "unix_address_name": ("unix_address", "name"),
    "linux_binprm_filename": ("linux_binprm", "filename"),
    "cgroup_root": ("cgroup", "root"),
    "cgroup_root_hierarchy_id": ("cgroup_root", "hierarchy_id"),
    "cgroup_level": ("cgroup", "level"),
    "task_signal": ("task_struct", "signal"),
    "signal_oom_score_adj": ("signal_struct", "oom_score_adj"),
    "mm_total_vm": ("mm_struct", "total_vm"),
    "mm_rss_stat": ("mm_struct", "rss_stat"),
    "task_flags": ("task_struct", "flags"),
    "sock_type": ("sock", "sk_type"),
}

# Fields a kernel may lack (a config option away): -1 then.
OPTIONAL_PATHS: dict[str, tuple[str, str]] = {
    "task_ioac_syscw": ("task_struct", "ioac.syscw"),
    "mnt_ns_event": ("mnt_namespace", "event"),
}

# Values computed in from_btf rather than read from one member path.
COMPUTED = frozenset({"memory_cgrp_id", "rss_counter_stride", "rss_counter_value",
                      "mm_filepages", "mm_anonpages", "mm_shmempages"})


# A BTF file for the running kernel, where the kernel has none of its own
# (/sys/kernel/btf/vmlinux needs CONFIG_DEBUG_INFO_BTF), e.g. from BTFhub.
ENV_BTF_PATH = "TRACER_BTF_PATH"


def btf_path() -> str:
    """The kernel BTF the offsets come from: $TRACER_BTF_PATH, else the kernel's own."""
    return os.environ.get(ENV_BTF_PATH) or VMLINUX_BTF


def kernel_offsets(path: str | Path | None = None) -> KernelOffsets:
    """Offsets for the BTF at ``path`` (default: :func:`btf_path`), parsed once per process."""
    return _offsets_from(str(path or btf_path()))


@functools.cache
def _offsets_from(path: str) -> KernelOffsets:
    return KernelOffsets.from_btf(Btf.load(path))
