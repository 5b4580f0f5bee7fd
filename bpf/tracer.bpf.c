/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process, namespace, mount and cgroup events of the container runtime's
 * process tree, for tracer/capture.py (bcc).
 *
 * Only tracepoints, syscall tracepoints and raw tracepoints are used: many
 * managed kernels have no kprobes and refuse fentry/fexit.
 *
 * Kernel structs are never dereferenced through header types: the installed
 * headers rarely match the running kernel.  Every field is read at an offset
 * that userspace takes from /sys/kernel/btf/vmlinux and passes as a -D macro
 * (OFF_<STRUCT>_<FIELD>, see tracer/offsets.py).
 *
 * In-kernel filter: a process is traced when it is in `tracked`, which holds
 * the runtime daemons (seeded by userspace, or recognised by comm at exec)
 * and, through fork, all their descendants, which includes every container.
 */
#include <uapi/linux/ptrace.h>
#include "events.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 8192
#endif

#define TRACKED_MAX 65536
#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270
#define CNI_PREFIX_LEN 48
#define CNI_PREFIX_SLOTS 4

/* Statistic slots in `stats`, mirrored by tracer/capture.py. */
#define STAT_TRACKED_FULL 0
#define STAT_PENDING_MISSING 1
#define STAT_SLOTS 4

struct comm_key {
	char comm[TASK_COMM_LEN];
};

struct cni_prefix {
	__u32 prefixlen;                 /* in bits, as LPM tries want */
	char prefix[CNI_PREFIX_LEN];
};

/* Syscall arguments kept from sys_enter_* to sys_exit_*, so that one event
 * carries both the arguments and the result. */
struct pending_syscall {
	__u64 args[4];
};

union scratch_event {
	struct exec_event exec;
	struct mount_event mount;
	struct pivot_root_event pivot_root;
	struct cgroup_event cgroup;
	struct cgroup_write_event cgroup_write;
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(tracked, __u32, __u8, TRACKED_MAX);
BPF_HASH(runtime_comms, struct comm_key, __u8, 64);
BPF_LPM_TRIE(cni_prefixes, struct cni_prefix, __u8, CNI_PREFIX_SLOTS);
BPF_TABLE("lru_hash", __u64, __u64, pending_clone_flags, 16384);
BPF_TABLE("lru_hash", __u64, struct pending_syscall, pending_syscalls, 16384);
BPF_PERCPU_ARRAY(scratch, union scratch_event, 1);
BPF_PERCPU_ARRAY(lost, __u64, EVENT_TYPE_MAX);
BPF_PERCPU_ARRAY(stats, __u64, STAT_SLOTS);

static __always_inline void *read_ptr(const void *base, __u32 offset)
{
	void *value = 0;
	bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
	return value;
}

static __always_inline __u64 read_u64(const void *base, __u32 offset)
{
	__u64 value = 0;
	bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
	return value;
}

static __always_inline __u32 read_u32(const void *base, __u32 offset)
{
	__u32 value = 0;
	bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
	return value;
}

/* One function per map: bcc only rewrites map references written as
 * `map.method()`, so a map cannot be passed as an argument. */
static __always_inline void count_lost(int type)
{
	__u64 *counter = lost.lookup(&type);
	if (counter)
		*counter += 1;
}

static __always_inline void count_stat(int slot)
{
	__u64 *counter = stats.lookup(&slot);
	if (counter)
		*counter += 1;
}

static __always_inline int is_tracked(__u32 tgid)
{
	return tracked.lookup(&tgid) != 0;
}

static __always_inline void track(__u32 tgid)
{
	__u8 one = 1;
	if (tracked.update(&tgid, &one) != 0)
		count_stat(STAT_TRACKED_FULL);
}

static __always_inline __u32 ns_inum(const void *nsproxy, __u32 member, __u32 ns_common)
{
	const void *ns = read_ptr(nsproxy, member);
	if (!ns)
		return 0;
	return read_u32(ns, ns_common + OFF_NS_COMMON_INUM);
}

static __always_inline __u64 memory_cgroup_id(const void *task)
{
	const void *css_set = read_ptr(task, OFF_TASK_CGROUPS);
	const void *css = read_ptr(css_set, OFF_CSS_SET_SUBSYS + OFF_MEMORY_CGRP_ID * sizeof(void *));
	const void *cgroup = read_ptr(css, OFF_CSS_CGROUP);
	const void *kn = read_ptr(cgroup, OFF_CGROUP_KN);
	if (!kn)
		return 0;
	return read_u64(kn, OFF_KERNFS_NODE_ID);
}

static __always_inline void fill_header(struct event_header *hdr, __u16 type, __u32 size)
{
	const void *task = (const void *)bpf_get_current_task();
	const void *leader = read_ptr(task, OFF_TASK_GROUP_LEADER);
	const void *parent = read_ptr(task, OFF_TASK_REAL_PARENT);
	const void *parent_leader = read_ptr(parent, OFF_TASK_GROUP_LEADER);
	const void *nsproxy = read_ptr(task, OFF_TASK_NSPROXY);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	hdr->type = type;
	hdr->size = size;
	hdr->cpu = bpf_get_smp_processor_id();
	hdr->ktime_ns = bpf_ktime_get_ns();
	hdr->pid = (__u32)pid_tgid;
	hdr->tgid = pid_tgid >> 32;
	hdr->ppid = read_u32(parent, OFF_TASK_TGID);
	hdr->_pad0 = 0;
	hdr->start_ns = read_u64(leader, OFF_TASK_START_TIME);
	hdr->parent_start_ns = read_u64(parent_leader, OFF_TASK_START_TIME);
	hdr->cgroup_id = bpf_get_current_cgroup_id();
	hdr->cgroup_v1_id = memory_cgroup_id(task);
	if (nsproxy) {
		hdr->ns.mnt = ns_inum(nsproxy, OFF_NSPROXY_MNT_NS, OFF_MNT_NS_NS);
		hdr->ns.pid = ns_inum(nsproxy, OFF_NSPROXY_PID_NS_FOR_CHILDREN, OFF_PID_NS_NS);
		hdr->ns.net = ns_inum(nsproxy, OFF_NSPROXY_NET_NS, OFF_NET_NS);
		hdr->ns.uts = ns_inum(nsproxy, OFF_NSPROXY_UTS_NS, OFF_UTS_NS_NS);
		hdr->ns.ipc = ns_inum(nsproxy, OFF_NSPROXY_IPC_NS, OFF_IPC_NS_NS);
		hdr->ns.cgroup = ns_inum(nsproxy, OFF_NSPROXY_CGROUP_NS, OFF_CGROUP_NS_NS);
	} else {
		__builtin_memset(&hdr->ns, 0, sizeof(hdr->ns));
	}
	bpf_get_current_comm(&hdr->comm, sizeof(hdr->comm));
}

/* Sends the first `size` bytes of an event; counts it as lost when the ring
 * buffer is full.  Wake-ups are batched: userspace drains on a short timer. */
static __always_inline void submit(void *event, __u32 size, __u16 type)
{
	if (events.ringbuf_output(event, size, BPF_RB_NO_WAKEUP) != 0)
		count_lost(type);
}

static __always_inline union scratch_event *scratch_space(void)
{
	int zero = 0;
	return scratch.lookup(&zero);
}

static __always_inline void remember_syscall(__u64 a0, __u64 a1, __u64 a2, __u64 a3)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_syscall pending = { .args = { a0, a1, a2, a3 } };

	if (!is_tracked(pid_tgid >> 32))
		return;
	pending_syscalls.update(&pid_tgid, &pending);
}

/* Returns the arguments saved at syscall entry, or 0 for untracked tasks. */
static __always_inline int recall_syscall(struct pending_syscall *out)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_syscall *pending;

	if (!is_tracked(pid_tgid >> 32))
		return 0;
	pending = pending_syscalls.lookup(&pid_tgid);
	if (!pending) {
		count_stat(STAT_PENDING_MISSING);
		return 0;
	}
	*out = *pending;
	pending_syscalls.delete(&pid_tgid);
	return 1;
}

/* ---- process lifecycle ------------------------------------------------ */

static __always_inline void remember_clone_flags(__u64 flags)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (is_tracked(pid_tgid >> 32))
		pending_clone_flags.update(&pid_tgid, &flags);
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
	remember_clone_flags(args->clone_flags);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
	__u64 flags = 0;

	/* clone_args.flags is the first member of the user's struct */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
	remember_clone_flags(flags);
	return 0;
}

/* vfork(2) has no flags argument; these are the ones it implies. */
TRACEPOINT_PROBE(syscalls, sys_enter_vfork)
{
	remember_clone_flags(0x00004000 /* CLONE_VFORK */ | 0x00000100 /* CLONE_VM */ | 17 /* SIGCHLD */);
	return 0;
}

/* Raw tracepoint: it hands over the child task itself, which the plain
 * tracepoint does not, and we need the child's tgid and start time. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	const void *child = (const void *)ctx->args[1];
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 *flags;
	struct fork_event event = {};
	__u32 child_pid, child_tgid;

	if (!is_tracked(pid_tgid >> 32))
		return 0;
	child_pid = read_u32(child, OFF_TASK_PID);
	child_tgid = read_u32(child, OFF_TASK_TGID);
	if (child_pid != child_tgid)
		return 0; /* a thread: processes are the unit we trace */
	track(child_tgid);

	fill_header(&event.hdr, EVENT_FORK, sizeof(event));
	event.child_pid = child_pid;
	event.child_tgid = child_tgid;
	event.child_start_ns = read_u64(child, OFF_TASK_START_TIME);
	flags = pending_clone_flags.lookup(&pid_tgid);
	if (flags) {
		event.clone_flags = *flags;
		pending_clone_flags.delete(&pid_tgid);
	}
	submit(&event, sizeof(event), EVENT_FORK);
	return 0;
}

static __always_inline int is_runtime_comm(void)
{
	struct comm_key key = {};

	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	return runtime_comms.lookup(&key) != 0;
}

/* CNI plugin directories live in an LPM trie, so that "is this path under
 * one of them" is a single longest-prefix lookup instead of a byte loop. */
static __always_inline int has_cni_prefix(const char *filename)
{
	struct cni_prefix key = { .prefixlen = CNI_PREFIX_LEN * 8 };

	__builtin_memcpy(key.prefix, filename, CNI_PREFIX_LEN);
	return cni_prefixes.lookup(&key) != 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	const void *task = (const void *)bpf_get_current_task();
	const void *mm = read_ptr(task, OFF_TASK_MM);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	union scratch_event *space;
	struct exec_event *event;
	__u64 arg_start, arg_end, env_start, env_end, argv_len, env_len;
	unsigned short filename_offset = args->data_loc_filename & 0xFFFF;
	long filename_len;
	__u32 size;

	if (!is_tracked(tgid)) {
		if (!is_runtime_comm())
			return 0;
		track(tgid);
	}
	space = scratch_space();
	if (!space)
		return 0;
	event = &space->exec;
	event->old_pid = args->old_pid;
	event->flags = 0;
	event->_pad0 = 0;

	filename_len = bpf_probe_read_kernel_str(event->data, FILENAME_MAX_LEN,
						 (const char *)args + filename_offset);
	if (filename_len < 0)
		filename_len = 0;
	filename_len &= (FILENAME_MAX_LEN * 2 - 1);
	event->filename_len = filename_len;

	arg_start = read_u64(mm, OFF_MM_ARG_START);
	arg_end = read_u64(mm, OFF_MM_ARG_END);
	argv_len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (argv_len > ARGV_MAX_LEN - 1) {
		argv_len = ARGV_MAX_LEN - 1;
		event->flags |= EXEC_FLAG_ARGV_TRUNCATED;
	}
	argv_len &= ARGV_MAX_LEN - 1;
	if (bpf_probe_read_user(event->data + filename_len, argv_len, (void *)arg_start) != 0)
		argv_len = 0;
	event->argv_len = argv_len;

	/* CNI plugins learn their pod from CNI_* variables.  Go shuffles the
	 * environment's order, so copy all of it (up to ENV_MAX_LEN); userspace
	 * keeps the CNI_* keys and drops the rest before storing anything. */
	env_len = 0;
	if (has_cni_prefix(event->data)) {
		env_start = read_u64(mm, OFF_MM_ENV_START);
		env_end = read_u64(mm, OFF_MM_ENV_END);
		env_len = env_end > env_start ? env_end - env_start : 0;
		if (env_len > ENV_MAX_LEN - 1) {
			env_len = ENV_MAX_LEN - 1;
			event->flags |= EXEC_FLAG_ENV_TRUNCATED;
		}
		env_len &= ENV_MAX_LEN - 1;
		if (bpf_probe_read_user(event->data + filename_len + argv_len, env_len,
					(void *)env_start) != 0)
			env_len = 0;
		event->flags |= EXEC_FLAG_ENV_CAPTURED;
	}
	event->env_len = env_len;

	size = offsetof(struct exec_event, data) + filename_len + argv_len + env_len;
	if (size > sizeof(*event))
		size = sizeof(*event);
	fill_header(&event->hdr, EVENT_EXEC, size);
	submit(event, size, EVENT_EXEC);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	const void *task = (const void *)bpf_get_current_task();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct exit_event event = {};

	if (!args->group_dead || !is_tracked(tgid))
		return 0;
	fill_header(&event.hdr, EVENT_EXIT, sizeof(event));
	event.exit_code = read_u32(task, OFF_TASK_EXIT_CODE);
	submit(&event, sizeof(event), EVENT_EXIT);
	tracked.delete(&tgid);
	return 0;
}

/* ---- namespaces --------------------------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_unshare)
{
	remember_syscall(args->unshare_flags, 0, 0, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_setns)
{
	remember_syscall(args->flags, args->fd, 0, 0);
	return 0;
}

static __always_inline void emit_namespace(__u32 syscall, struct pending_syscall *call, long ret)
{
	struct namespace_event event = {};

	fill_header(&event.hdr, EVENT_NAMESPACE, sizeof(event));
	event.syscall = syscall;
	event.flags = call->args[0];
	event.fd = syscall == NS_SYSCALL_SETNS ? (__s32)call->args[1] : -1;
	event.ret = ret;
	submit(&event, sizeof(event), EVENT_NAMESPACE);
}

TRACEPOINT_PROBE(syscalls, sys_exit_unshare)
{
	struct pending_syscall call;

	if (recall_syscall(&call))
		emit_namespace(NS_SYSCALL_UNSHARE, &call, args->ret);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_setns)
{
	struct pending_syscall call;

	if (recall_syscall(&call))
		emit_namespace(NS_SYSCALL_SETNS, &call, args->ret);
	return 0;
}

/* ---- mounts ------------------------------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
	remember_syscall((__u64)args->dev_name, (__u64)args->dir_name,
			 (__u64)args->type, args->flags);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_mount)
{
	struct pending_syscall call;
	union scratch_event *space;
	struct mount_event *event;

	if (!recall_syscall(&call))
		return 0;
	space = scratch_space();
	if (!space)
		return 0;
	event = &space->mount;
	/* The scratch space holds the previous event's bytes (an environment,
	 * say): clear it, since this event is sent whole. */
	__builtin_memset(event, 0, sizeof(*event));
	event->flags = call.args[3];
	bpf_probe_read_user_str(event->source, sizeof(event->source), (void *)call.args[0]);
	bpf_probe_read_user_str(event->target, sizeof(event->target), (void *)call.args[1]);
	bpf_probe_read_user_str(event->fstype, sizeof(event->fstype), (void *)call.args[2]);
	fill_header(&event->hdr, EVENT_MOUNT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_MOUNT);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_pivot_root)
{
	remember_syscall((__u64)args->new_root, (__u64)args->put_old, 0, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_pivot_root)
{
	struct pending_syscall call;
	union scratch_event *space;
	struct pivot_root_event *event;

	if (!recall_syscall(&call))
		return 0;
	space = scratch_space();
	if (!space)
		return 0;
	event = &space->pivot_root;
	__builtin_memset(event, 0, sizeof(*event));
	event->ret = args->ret;
	bpf_probe_read_user_str(event->new_root, sizeof(event->new_root), (void *)call.args[0]);
	bpf_probe_read_user_str(event->put_old, sizeof(event->put_old), (void *)call.args[1]);
	fill_header(&event->hdr, EVENT_PIVOT_ROOT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_PIVOT_ROOT);
	return 0;
}

/* ---- cgroups ------------------------------------------------------------ */

static __always_inline void emit_cgroup(__u16 type, int hierarchy, int level, __u64 id,
					__u32 target_pid, const char *path)
{
	union scratch_event *space = scratch_space();
	struct cgroup_event *event;
	long path_len;

	if (!space)
		return;
	event = &space->cgroup;
	__builtin_memset(event, 0, sizeof(*event));
	event->hierarchy = hierarchy;
	event->level = level;
	event->cgroup_id = id;
	event->target_pid = target_pid;
	path_len = bpf_probe_read_kernel_str(event->path, sizeof(event->path), path);
	event->path_len = path_len > 0 ? path_len : 0;
	fill_header(&event->hdr, type, sizeof(*event));
	submit(event, sizeof(*event), type);
}

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
	if (!is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_cgroup(EVENT_CGROUP_MKDIR, args->root, args->level, args->id, 0,
		    (const char *)args + (args->data_loc_path & 0xFFFF));
	return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
	if (!is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_cgroup(EVENT_CGROUP_ATTACH, args->dst_root, args->dst_level, args->dst_id,
		    args->pid, (const char *)args + (args->data_loc_dst_path & 0xFFFF));
	return 0;
}

/* Writes of limits and of cgroup.procs: the file is recognised by its
 * filesystem's magic, reached through the fd table, because runc opens
 * cgroup files relative to a directory fd (openat2), so no path is seen. */
TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
	const void *task, *files, *fdt, *fd_array, *file, *inode, *sb, *dentry;
	union scratch_event *space;
	struct cgroup_write_event *event;
	__u32 fd = args->fd, max_fds;
	__u64 magic, data_len;

	if (!is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	task = (const void *)bpf_get_current_task();
	files = read_ptr(task, OFF_TASK_FILES);
	fdt = read_ptr(files, OFF_FILES_FDT);
	max_fds = read_u32(fdt, OFF_FDTABLE_MAX_FDS);
	if (fd >= max_fds)
		return 0;
	fd_array = read_ptr(fdt, OFF_FDTABLE_FD);
	file = read_ptr(fd_array, fd * sizeof(void *));
	inode = read_ptr(file, OFF_FILE_F_INODE);
	sb = read_ptr(inode, OFF_INODE_I_SB);
	magic = read_u64(sb, OFF_SUPER_BLOCK_S_MAGIC);
	if (magic != CGROUP_SUPER_MAGIC && magic != CGROUP2_SUPER_MAGIC)
		return 0;

	space = scratch_space();
	if (!space)
		return 0;
	event = &space->cgroup_write;
	__builtin_memset(event, 0, sizeof(*event));
	event->fs_magic = magic;
	event->count = args->count;
	event->fd = fd;
	dentry = read_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
#pragma unroll
	for (int depth = 0; depth < CGROUP_NAME_DEPTH; depth++) {
		const char *name = read_ptr(dentry, OFF_DENTRY_D_NAME + OFF_QSTR_NAME);

		if (name)
			bpf_probe_read_kernel_str(event->names + depth * CGROUP_NAME_LEN, CGROUP_NAME_LEN, name);
		dentry = read_ptr(dentry, OFF_DENTRY_D_PARENT);
	}
	data_len = args->count;
	if (data_len > CGROUP_WRITE_DATA_LEN)
		data_len = CGROUP_WRITE_DATA_LEN;
	data_len &= (CGROUP_WRITE_DATA_LEN * 2 - 1);
	if (data_len > CGROUP_WRITE_DATA_LEN)
		data_len = CGROUP_WRITE_DATA_LEN;
	if (bpf_probe_read_user(event->data, data_len, args->buf) != 0)
		data_len = 0;
	event->data_len = data_len;
	fill_header(&event->hdr, EVENT_CGROUP_WRITE, sizeof(*event));
	submit(event, sizeof(*event), EVENT_CGROUP_WRITE);
	return 0;
}
