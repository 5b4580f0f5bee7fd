// SPDX-License-Identifier: GPL-2.0
/*
 * Feature probes for `tracer doctor` (tracer/kernel/).
 *
 * The file is compiled once per probe with exactly one -DPROBE_<NAME>, so a
 * feature the kernel refuses (a map type, a program type) cannot make the
 * other probes fail: bcc creates every map and autoloads every kfunc__
 * program of a module when it is constructed.
 *
 * TARGET_TGID is the doctor's own process id; every program ignores all
 * other processes.  Programs are attached from Python by name, so that load
 * and attach failures are reported separately.
 */

#if !defined(TARGET_TGID)
#error "TARGET_TGID must be defined"
#endif

static __always_inline int is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == TARGET_TGID;
}

#if defined(PROBE_TRACEPOINT) || defined(PROBE_RAW_TRACEPOINT) || defined(PROBE_UPROBE) || \
	defined(PROBE_KPROBE)
BPF_ARRAY(hits, u64, 1);

static __always_inline int count_hit(void)
{
	int zero = 0;
	u64 *count;

	if (!is_target())
		return 0;
	count = hits.lookup(&zero);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}
#endif

#if defined(PROBE_TRACEPOINT)
/* Attached to syscalls:sys_enter_getppid. */
int on_tracepoint(void *ctx)
{
	return count_hit();
}
#endif

#if defined(PROBE_RAW_TRACEPOINT)
/* Attached to the raw tracepoint sys_enter. */
int on_raw_tracepoint(struct bpf_raw_tracepoint_args *ctx)
{
	return count_hit();
}
#endif

#if defined(PROBE_UPROBE)
/* Attached to libc's getpid(). */
int on_uprobe(struct pt_regs *ctx)
{
	return count_hit();
}
#endif

#if defined(PROBE_KPROBE)
/* Attached to the getppid syscall handler, if the kernel has kprobes. */
int on_kprobe(struct pt_regs *ctx)
{
	return count_hit();
}
#endif

#if defined(PROBE_RINGBUF)
BPF_RINGBUF_OUTPUT(events, 1);

/* Attached to syscalls:sys_enter_getppid; sends the caller's tgid. */
int on_ringbuf_tracepoint(void *ctx)
{
	u32 tgid = TARGET_TGID;

	if (is_target())
		events.ringbuf_output(&tgid, sizeof(tgid), 0);
	return 0;
}
#endif

#if defined(PROBE_SOCKET_TRACEPOINT)
/* Attached to the raw tracepoint sock_send_length: the bytes sent, and the
 * fd the sending syscall was given, read from its registers
 * (bpf_task_pt_regs), as the tracer's CRI capture reads them. */
BPF_ARRAY(sends, u64, 2);

int on_sock_send_length(struct bpf_raw_tracepoint_args *ctx)
{
	int bytes_slot = 0, fd_slot = 1;
	u64 bytes = (int)ctx->args[1], fd = 0;
	const void *regs;

	if (!is_target())
		return 0;
	regs = (const void *)bpf_task_pt_regs(bpf_get_current_task_btf());
	bpf_probe_read_kernel(&fd, sizeof(fd), (const char *)regs + OFF_PT_REGS_DI);
	sends.update(&bytes_slot, &bytes);
	sends.update(&fd_slot, &fd);
	return 0;
}
#endif

#if defined(PROBE_FENTRY)
/*
 * bcc loads and attaches KFUNC_PROBE programs while constructing the module,
 * so constructing it is the whole probe.  vfs_read exists on every kernel.
 */
KFUNC_PROBE(vfs_read)
{
	return 0;
}
#endif

#if defined(PROBE_OFFSETS)
#include "kernel_read.h"
/*
 * Reads the fields the tracer needs at the BTF offsets (-DOFF_* macros) from
 * the doctor's own task, so userspace can compare them with /proc.
 * CHECK_FD is a file descriptor the doctor holds open.
 */
#define ARGV_BYTES 64
#define NAME_BYTES 32

struct offsets_sample {
	u32 pid;
	u32 tgid;
	u32 parent_tgid;
	u32 leader_pid;
	u64 start_time;
	u64 start_boottime;
	u32 ns_uts;
	u32 ns_ipc;
	u32 ns_mnt;
	u32 ns_pid_for_children;
	u32 ns_net;
	u32 ns_cgroup;
	u64 memcg_kn_id;
	u64 arg_len;
	u64 env_len;
	u32 max_fds;
	u32 exit_code;
	u64 s_magic;
	/* u8 rather than char: Python sees all bytes, not a NUL-terminated string */
	u8 argv[ARGV_BYTES];
	u8 fd_name[NAME_BYTES];
	u8 fd_parent_name[NAME_BYTES];
};

BPF_ARRAY(samples, struct offsets_sample, 1);

static __always_inline u32 ns_inum(const void *nsproxy, long ns_ptr_offset, long ns_common_offset)
{
	const void *ns = read_ptr(nsproxy, ns_ptr_offset);

	return ns ? read_u32(ns, ns_common_offset + OFF_NS_COMMON_INUM) : 0;
}

static __always_inline void read_dentry_name(u8 *dst, const void *dentry)
{
	const void *name = read_ptr(dentry, OFF_DENTRY_D_NAME + OFF_QSTR_NAME);

	bpf_probe_read_kernel_str(dst, NAME_BYTES, name);
}

/* Attached to syscalls:sys_enter_getppid. */
int on_offsets_tracepoint(void *ctx)
{
	int zero = 0;
	struct offsets_sample *s;
	const void *task, *nsproxy, *mm, *fdt, *file, *dentry, *css_set, *css, *cgroup, *kn;
	u64 arg_start;

	if (!is_target())
		return 0;
	s = samples.lookup(&zero);
	if (!s)
		return 0;
	task = (const void *)bpf_get_current_task();

	s->pid = read_u32(task, OFF_TASK_PID);
	s->tgid = read_u32(task, OFF_TASK_TGID);
	s->parent_tgid = read_u32(read_ptr(task, OFF_TASK_REAL_PARENT), OFF_TASK_TGID);
	s->leader_pid = read_u32(read_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_PID);
	s->start_time = read_u64(task, OFF_TASK_START_TIME);
	s->start_boottime = read_u64(task, OFF_TASK_START_BOOTTIME);
	s->exit_code = read_u32(task, OFF_TASK_EXIT_CODE);

	nsproxy = read_ptr(task, OFF_TASK_NSPROXY);
	if (nsproxy) {
		s->ns_uts = ns_inum(nsproxy, OFF_NSPROXY_UTS_NS, OFF_UTS_NS_NS);
		s->ns_ipc = ns_inum(nsproxy, OFF_NSPROXY_IPC_NS, OFF_IPC_NS_NS);
		s->ns_mnt = ns_inum(nsproxy, OFF_NSPROXY_MNT_NS, OFF_MNT_NS_NS);
		s->ns_pid_for_children =
			ns_inum(nsproxy, OFF_NSPROXY_PID_NS_FOR_CHILDREN, OFF_PID_NS_NS);
		s->ns_net = ns_inum(nsproxy, OFF_NSPROXY_NET_NS, OFF_NET_NS);
		s->ns_cgroup = ns_inum(nsproxy, OFF_NSPROXY_CGROUP_NS, OFF_CGROUP_NS_NS);
	}

	mm = read_ptr(task, OFF_TASK_MM);
	if (mm) {
		arg_start = read_u64(mm, OFF_MM_ARG_START);
		s->arg_len = read_u64(mm, OFF_MM_ARG_END) - arg_start;
		s->env_len = read_u64(mm, OFF_MM_ENV_END) - read_u64(mm, OFF_MM_ENV_START);
		bpf_probe_read_user(s->argv, sizeof(s->argv), (const void *)arg_start);
	}

	fdt = read_ptr(read_ptr(task, OFF_TASK_FILES), OFF_FILES_FDT);
	s->max_fds = read_u32(fdt, OFF_FDTABLE_MAX_FDS);
	if (CHECK_FD < s->max_fds) {
		file = read_ptr(read_ptr(fdt, OFF_FDTABLE_FD), CHECK_FD * sizeof(void *));
		dentry = read_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
		read_dentry_name(s->fd_name, dentry);
		read_dentry_name(s->fd_parent_name, read_ptr(dentry, OFF_DENTRY_D_PARENT));
		s->s_magic = read_u64(read_ptr(read_ptr(file, OFF_FILE_F_INODE), OFF_INODE_I_SB),
				      OFF_SUPER_BLOCK_S_MAGIC);
	}

	css_set = read_ptr(task, OFF_TASK_CGROUPS);
	css = read_ptr(css_set, OFF_CSS_SET_SUBSYS + OFF_MEMORY_CGRP_ID * sizeof(void *));
	cgroup = read_ptr(css, OFF_CSS_CGROUP);
	kn = read_ptr(cgroup, OFF_CGROUP_KN);
	s->memcg_kn_id = read_u64(kn, OFF_KERNFS_NODE_ID);
	return 0;
}
#endif
