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
#define STAT_IO_TRUNCATED 2
#define STAT_ENDPOINTS_FULL 3
#define STAT_SLOTS 4
#ifndef SOCKET_MAX_SEGMENTS
#define SOCKET_MAX_SEGMENTS 8       /* per syscall: 8 segments of up to 8 KiB - 1 */
#endif
#define SOCKET_MAX_IOV 64
#define SOCKET_GATHER_LEN (SOCKET_SEGMENT_LEN - 1)  /* a mask: offsets and lengths below 8 KiB */
#define AF_UNIX_FAMILY 1
#define EINPROGRESS_ERRNO 115

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

struct socket_path_key {
	char path[SOCKET_PATH_LEN];
};

/* A read or write on a CRI connection, kept from entry to exit: the bytes
 * are copied at exit, when the syscall says how many moved. */
struct pending_io {
	__u64 entry_ns;             /* when the syscall began */
	__u64 buffer;               /* the buffer, or the iovec array */
	__u64 count;                /* bytes asked for, or iovec count */
	__u32 fd;
	__u8 vectored;
	__u8 direction;             /* enum socket_direction */
	__u16 syscall;
};

union scratch_event {
	struct exec_event exec;
	struct mount_event mount;
	struct pivot_root_event pivot_root;
	struct cgroup_event cgroup;
	struct cgroup_write_event cgroup_write;
	struct socket_data_event socket_data;
	struct socket_open_event socket_open;
	struct exec_failed_event exec_failed;
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(tracked, __u32, __u8, TRACKED_MAX);
BPF_HASH(runtime_comms, struct comm_key, __u8, 64);
BPF_LPM_TRIE(cni_prefixes, struct cni_prefix, __u8, CNI_PREFIX_SLOTS);
BPF_TABLE("lru_hash", __u64, __u64, pending_clone_flags, 16384);
BPF_TABLE("lru_hash", __u64, struct pending_syscall, pending_syscalls, 16384);
BPF_PERCPU_ARRAY(scratch, union scratch_event, 1);
/* CRI connections: the runtime sockets' paths and listening inodes (from
 * userspace), every endpoint by socket inode, and the processes that hold
 * one, so that other processes' reads and writes cost one lookup. */
BPF_HASH(cri_paths, struct socket_path_key, __u8, 16);
BPF_HASH(cri_listeners, __u64, __u8, 64);
BPF_HASH(cri_endpoints, __u64, struct socket_endpoint, 16384);
BPF_HASH(cri_tgids, __u32, __u8, 4096);
BPF_TABLE("lru_hash", __u64, struct pending_io, pending_ios, 16384);
/* Per endpoint inode: the directions (bit 1 out, bit 2 in) whose bytes the
 * ring buffer could not take; the next record of that direction carries
 * SOCKET_FLAG_GAP_BEFORE, so that the decoder knows where bytes are missing. */
BPF_TABLE("lru_hash", __u64, __u8, cri_gaps, 16384);
BPF_TABLE("lru_hash", __u64, struct socket_path_key, pending_connects, 1024);
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
 * buffer is full (and returns non-zero).  Wake-ups are batched: userspace
 * drains on a short timer. */
static __always_inline int submit(void *event, __u32 size, __u16 type)
{
	if (events.ringbuf_output(event, size, BPF_RB_NO_WAKEUP) != 0) {
		count_lost(type);
		return -1;
	}
	return 0;
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

/* The same, for any process (CRI clients are not in the runtime's tree). */
static __always_inline int recall_syscall_any(struct pending_syscall *out)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_syscall *pending = pending_syscalls.lookup(&pid_tgid);

	if (!pending)
		return 0;
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
	__u64 pid_tgid;
	__u32 size;

	if (!is_tracked(tgid)) {
		if (!is_runtime_comm())
			return 0;
		track(tgid);
	}
	pid_tgid = bpf_get_current_pid_tgid();
	pending_syscalls.delete(&pid_tgid);  /* the execve entry: it did not fail */
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

	if (!args->group_dead)
		return 0;
	cri_tgids.delete(&tgid);
	if (!is_tracked(tgid))
		return 0;
	fill_header(&event.hdr, EVENT_EXIT, sizeof(event));
	event.exit_code = read_u32(task, OFF_TASK_EXIT_CODE);
	submit(&event, sizeof(event), EVENT_EXIT);
	tracked.delete(&tgid);
	return 0;
}

/* ---- why a start failed ------------------------------------------------- */

/* The OOM killer's choice; the victim's SIGKILL exit follows. */
TRACEPOINT_PROBE(oom, mark_victim)
{
	__u32 victim = args->pid;
	struct oom_kill_event event = {};

	if (!is_tracked(victim) && !is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	fill_header(&event.hdr, EVENT_OOM_KILL, sizeof(event));
	event.victim_pid = victim;
	event.victim_oom_score_adj = args->oom_score_adj;
	event.total_vm_kb = args->total_vm;
	event.anon_rss_kb = args->anon_rss;
	event.file_rss_kb = args->file_rss;
	event.shmem_rss_kb = args->shmem_rss;
	bpf_probe_read_kernel_str(event.victim_comm, sizeof(event.victim_comm),
				  (const char *)args + (args->data_loc_comm & 0xFFFF));
	submit(&event, sizeof(event), EVENT_OOM_KILL);
	return 0;
}

/* At exit of a failed execve: the kernel copied the filename in at entry,
 * so the user page is present now (at entry, in a fresh child, it may not be). */
static __always_inline void exec_failed(long ret)
{
	struct pending_syscall call;
	union scratch_event *space;
	struct exec_failed_event *event;
	int len;

	if (!recall_syscall(&call))
		return;
	space = scratch_space();
	if (!space)
		return;
	event = &space->exec_failed;
	fill_header(&event->hdr, EVENT_EXEC_FAILED, sizeof(*event));
	event->ret = ret;
	len = bpf_probe_read_user_str(event->filename, sizeof(event->filename), (const char *)call.args[0]);
	event->filename_len = len > 0 ? len : 0;
	submit(event, sizeof(*event), EVENT_EXEC_FAILED);
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
	event->ret = args->ret;
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

static __always_inline const void *fd_file(__u32 fd)
{
	const void *task = (const void *)bpf_get_current_task();
	const void *files = read_ptr(task, OFF_TASK_FILES);
	const void *fdt = read_ptr(files, OFF_FILES_FDT);
	const void *fd_array;

	if (fd >= read_u32(fdt, OFF_FDTABLE_MAX_FDS))
		return 0;
	fd_array = read_ptr(fdt, OFF_FDTABLE_FD);
	return read_ptr(fd_array, fd * sizeof(void *));
}

static __always_inline __u64 file_inode_number(const void *file)
{
	return read_u64(read_ptr(file, OFF_FILE_F_INODE), OFF_INODE_I_INO);
}

/* Writes of limits and of cgroup.procs: the file is recognised by its
 * filesystem's magic, reached through the fd table, because runc opens
 * cgroup files relative to a directory fd (openat2), so no path is seen. */
static __always_inline void cgroup_write(__u32 fd, const char *buf, __u64 count)
{
	const void *file, *inode, *sb, *dentry;
	union scratch_event *space;
	struct cgroup_write_event *event;
	__u64 magic, data_len;

	file = fd_file(fd);
	inode = read_ptr(file, OFF_FILE_F_INODE);
	sb = read_ptr(inode, OFF_INODE_I_SB);
	magic = read_u64(sb, OFF_SUPER_BLOCK_S_MAGIC);
	if (magic != CGROUP_SUPER_MAGIC && magic != CGROUP2_SUPER_MAGIC)
		return;

	space = scratch_space();
	if (!space)
		return;
	event = &space->cgroup_write;
	__builtin_memset(event, 0, sizeof(*event));
	event->fs_magic = magic;
	event->count = count;
	event->fd = fd;
	dentry = read_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
#pragma unroll
	for (int depth = 0; depth < CGROUP_NAME_DEPTH; depth++) {
		const char *name = read_ptr(dentry, OFF_DENTRY_D_NAME + OFF_QSTR_NAME);

		if (name)
			bpf_probe_read_kernel_str(event->names + depth * CGROUP_NAME_LEN, CGROUP_NAME_LEN, name);
		dentry = read_ptr(dentry, OFF_DENTRY_D_PARENT);
	}
	data_len = count;
	if (data_len > CGROUP_WRITE_DATA_LEN)
		data_len = CGROUP_WRITE_DATA_LEN;
	data_len &= (CGROUP_WRITE_DATA_LEN * 2 - 1);
	if (data_len > CGROUP_WRITE_DATA_LEN)
		data_len = CGROUP_WRITE_DATA_LEN;
	if (bpf_probe_read_user(event->data, data_len, buf) != 0)
		data_len = 0;
	event->data_len = data_len;
	fill_header(&event->hdr, EVENT_CGROUP_WRITE, sizeof(*event));
	submit(event, sizeof(*event), EVENT_CGROUP_WRITE);
}

/* ---- CRI sockets ---------------------------------------------------------- */

/* The inode of the socket at the other end of a unix stream, or 0 while
 * that end has not been accepted yet (it has no struct socket then). */
static __always_inline __u64 peer_inode_number(const void *file)
{
	const void *socket = read_ptr(file, OFF_FILE_PRIVATE_DATA);
	const void *sk = read_ptr(socket, OFF_SOCKET_SK);
	const void *peer = read_ptr(sk, OFF_UNIX_SOCK_PEER);
	const void *peer_socket = read_ptr(peer, OFF_SOCK_SK_SOCKET);

	if (!peer_socket)
		return 0;
	/* struct socket_alloc { struct socket socket; struct inode vfs_inode; } */
	return read_u64((const char *)peer_socket + OFF_SOCKET_ALLOC_VFS_INODE, OFF_INODE_I_INO);
}

static __always_inline int holds_cri_socket(__u32 tgid)
{
	return cri_tgids.lookup(&tgid) != 0;
}

static __always_inline void register_endpoint(__u32 fd, __u8 side, const struct socket_path_key *path)
{
	const void *file = fd_file(fd);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 one = 1;
	union scratch_event *space;
	struct socket_open_event *event;
	struct socket_endpoint endpoint = {};
	struct socket_endpoint *peer;

	if (!file)
		return;
	endpoint.inode = file_inode_number(file);
	endpoint.peer_inode = peer_inode_number(file);
	endpoint.fd = fd;
	endpoint.side = side;
	if (cri_endpoints.update(&endpoint.inode, &endpoint) != 0) {
		count_stat(STAT_ENDPOINTS_FULL);
		return;
	}
	cri_tgids.update(&tgid, &one);
	/* An accepted end names its client; tell the client end too. */
	peer = endpoint.peer_inode ? cri_endpoints.lookup(&endpoint.peer_inode) : 0;
	if (peer)
		peer->peer_inode = endpoint.inode;

	space = scratch_space();
	if (!space)
		return;
	event = &space->socket_open;
	__builtin_memset(event, 0, sizeof(*event));
	event->endpoint = endpoint;
	bpf_probe_read_kernel_str(event->process_comm, TASK_COMM_LEN,
				  (const char *)read_ptr((const void *)bpf_get_current_task(), OFF_TASK_GROUP_LEADER) +
				  OFF_TASK_COMM);
	if (path)
		__builtin_memcpy(event->path, path->path, SOCKET_PATH_LEN);
	fill_header(&event->hdr, EVENT_SOCKET_OPEN, sizeof(*event));
	submit(event, sizeof(*event), EVENT_SOCKET_OPEN);
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
	struct {
		__u16 family;
		char path[SOCKET_PATH_LEN];
	} address = {};
	struct socket_path_key key = {};
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	int skip = 0;

	if (bpf_probe_read_user(&address, sizeof(address), (void *)args->uservaddr) != 0)
		return 0;
	if (address.family != AF_UNIX_FAMILY)
		return 0;
	/* grpc-core connects to "///run/…": compare with one leading slash */
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (address.path[i] == '/' && address.path[i + 1] == '/')
			skip = i + 1;
		else
			break;
	}
	bpf_probe_read_kernel_str(key.path, sizeof(key.path), address.path + (skip & 7));
	if (!cri_paths.lookup(&key))
		return 0;
	struct pending_syscall pending = { .args = { args->fd, 0, 0, 0 } };

	pending_connects.update(&pid_tgid, &key);
	pending_syscalls.update(&pid_tgid, &pending);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct socket_path_key *key = pending_connects.lookup(&pid_tgid);
	struct pending_syscall call;

	if (!key)
		return 0;
	if ((args->ret == 0 || args->ret == -EINPROGRESS_ERRNO) && recall_syscall_any(&call))
		register_endpoint(call.args[0], SOCKET_SIDE_CLIENT, key);
	pending_connects.delete(&pid_tgid);
	return 0;
}

static __always_inline void remember_accept(__u32 listening_fd)
{
	const void *file = fd_file(listening_fd);
	__u64 inode;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_syscall pending = { .args = { listening_fd, 0, 0, 0 } };

	if (!file)
		return;
	inode = file_inode_number(file);
	if (!cri_listeners.lookup(&inode))
		return;
	pending_syscalls.update(&pid_tgid, &pending);
}

static __always_inline void accepted(long ret)
{
	struct pending_syscall call;

	if (!recall_syscall_any(&call))
		return;
	if (ret >= 0)
		register_endpoint((__u32)ret, SOCKET_SIDE_SERVER, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
	remember_accept(args->fd);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
	accepted(args->ret);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{
	remember_accept(args->fd);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
	accepted(args->ret);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	const void *file;
	__u64 inode;
	struct socket_endpoint *endpoint;
	struct socket_close_event event = {};

	if (!holds_cri_socket(tgid))
		return 0;
	file = fd_file(args->fd);
	if (!file)
		return 0;
	inode = file_inode_number(file);
	endpoint = cri_endpoints.lookup(&inode);
	if (!endpoint)
		return 0;
	event.endpoint = *endpoint;
	cri_endpoints.delete(&inode);
	cri_gaps.delete(&inode);
	fill_header(&event.hdr, EVENT_SOCKET_CLOSE, sizeof(event));
	submit(&event, sizeof(event), EVENT_SOCKET_CLOSE);
	return 0;
}

static __always_inline void remember_io(__u32 fd, __u64 buffer, __u64 count, __u8 vectored,
					__u8 direction, __u16 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	const void *file;
	__u64 inode;
	struct pending_io pending = {};

	if (!holds_cri_socket(pid_tgid >> 32))
		return;
	file = fd_file(fd);
	if (!file)
		return;
	inode = file_inode_number(file);
	if (!cri_endpoints.lookup(&inode))
		return;
	pending.entry_ns = bpf_ktime_get_ns();
	pending.buffer = buffer;
	pending.count = count;
	pending.fd = fd;
	pending.vectored = vectored;
	pending.direction = direction;
	pending.syscall = syscall;
	pending_ios.update(&pid_tgid, &pending);
}

/* Sends one user buffer as segments of at most SOCKET_SEGMENT_LEN - 1
 * bytes, at most `segments` of them; returns the bytes sent.  Unrolled: the
 * verifier then walks a straight line instead of a loop's many states. */
static __always_inline __u32 emit_segments(struct socket_data_event *event, __u64 base, __u64 length,
					   __u32 offset, const int segments, __u32 *lost)
{
	__u32 sent = 0;

#pragma unroll
	for (int i = 0; i < segments; i++) {
		__u64 chunk = length - sent;
		__u32 size;

		if (sent >= length)
			break;
		if (chunk > SOCKET_SEGMENT_LEN - 1)
			chunk = SOCKET_SEGMENT_LEN - 1;
		/* hide the clamp from the compiler so that the mask, which the
		 * verifier needs to bound the copy, is not optimised away */
		asm volatile("" : "+r"(chunk));
		chunk &= SOCKET_SEGMENT_LEN - 1;
		if (bpf_probe_read_user(event->data, chunk, (const void *)(base + sent)) != 0)
			break;
		event->offset = offset + sent;
		event->data_len = chunk;
		size = offsetof(struct socket_data_event, data) + chunk;
		event->hdr.size = size;
		if (submit(event, size, EVENT_SOCKET_DATA) != 0)
			*lost += 1;
		sent += chunk;
	}
	return sent;
}

/* A vectored read or write (grpc-core sends one iovec per header field)
 * gathered into one segment of at most SOCKET_GATHER_LEN bytes.  Every
 * turn of the loop either copies one iovec and goes on, or stops: one path
 * through the loop, which keeps the verifier's work linear in its length. */
static __always_inline __u32 emit_gathered(struct socket_data_event *event, __u64 iov_array, __u64 iov_count,
					   __u32 total, __u32 *lost)
{
	__u64 used = 0;
	__u32 size;

#pragma unroll
	for (int j = 0; j < SOCKET_MAX_IOV; j++) {
		struct { __u64 base; __u64 len; } iov = {};
		__u64 take;

		if (j >= iov_count || used >= total || used >= SOCKET_GATHER_LEN)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (const char *)iov_array + j * sizeof(iov)) != 0)
			break;
		take = iov.len;
		if (take > total - used)
			take = total - used;
		if (take > SOCKET_GATHER_LEN - used)
			take = SOCKET_GATHER_LEN - used;
		asm volatile("" : "+r"(take));
		take &= SOCKET_GATHER_LEN;
		asm volatile("" : "+r"(used));
		used &= SOCKET_GATHER_LEN;
		if (bpf_probe_read_user(event->data + used, take, (const void *)iov.base) != 0)
			break;
		used += take;
		if (take < iov.len)
			break;
	}
	if (used == 0)
		return 0;
	used &= SOCKET_SEGMENT_LEN - 1;
	event->offset = 0;
	event->data_len = used;
	size = offsetof(struct socket_data_event, data) + used;
	event->hdr.size = size;
	if (submit(event, size, EVENT_SOCKET_DATA) != 0)
		*lost += 1;
	return used;
}

/* Copies the bytes a read or write moved.  `vectored` is a constant at
 * each call site, so each program carries only the path it needs. */
static __always_inline void emit_io(long ret, const int vectored)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_io *pending = pending_ios.lookup(&pid_tgid);
	struct pending_io io;
	struct socket_endpoint *found;
	union scratch_event *space;
	struct socket_data_event *event;
	const void *file;
	__u64 inode;
	__u32 total, sent = 0, lost = 0;
	__u8 *gap, gap_bits = 0, bit;

	if (!pending)
		return;
	io = *pending;
	pending_ios.delete(&pid_tgid);
	if (ret <= 0)
		return;
	file = fd_file(io.fd);
	if (!file)
		return;
	inode = file_inode_number(file);
	found = cri_endpoints.lookup(&inode);
	space = scratch_space();
	if (!found || !space)
		return;
	event = &space->socket_data;
	total = ret;
	fill_header(&event->hdr, EVENT_SOCKET_DATA, 0);
	/* Written bytes are the peer's to read from the moment the write
	 * begins, read bytes are ours when the read returns: time each so, and
	 * a reply never seems to arrive before it was sent. */
	if (io.direction == SOCKET_DIRECTION_OUT)
		event->hdr.ktime_ns = io.entry_ns;
	event->endpoint = *found;
	event->syscall_bytes = total;
	event->direction = io.direction;
	event->flags = 0;
	event->syscall = io.syscall;
	bit = io.direction == SOCKET_DIRECTION_OUT ? 1 : 2;
	gap = cri_gaps.lookup(&inode);
	if (gap)
		gap_bits = *gap;
	if (gap_bits & bit)
		event->flags = SOCKET_FLAG_GAP_BEFORE;

	if (!vectored)
		sent = emit_segments(event, io.buffer, total, 0, SOCKET_MAX_SEGMENTS, &lost);
	else
		sent = emit_gathered(event, io.buffer, io.count, total, &lost);
	if (sent < total)
		count_stat(STAT_IO_TRUNCATED);
	/* A record lost now marks the direction; one delivered after a loss
	 * carried the mark, which is then cleared. */
	if (lost) {
		gap_bits |= bit;
		cri_gaps.update(&inode, &gap_bits);
	} else if (gap_bits & bit) {
		gap_bits &= ~bit;
		if (gap_bits)
			cri_gaps.update(&inode, &gap_bits);
		else
			cri_gaps.delete(&inode);
	}
}

/* struct user_msghdr: msg_iov at byte 16, msg_iovlen at byte 24 */
static __always_inline void remember_msg(__u32 fd, const void *msg, __u8 direction, __u16 syscall)
{
	__u64 iov[2] = {};

	if (!holds_cri_socket(bpf_get_current_pid_tgid() >> 32))
		return;
	if (bpf_probe_read_user(iov, sizeof(iov), (const char *)msg + 16) != 0)
		return;
	remember_io(fd, iov[0], iov[1], 1, direction, syscall);
}

/* The read and write families go through the raw sys_enter/sys_exit
 * tracepoints: one cheap program for every syscall, which returns at once
 * for all but these eight.  Per-syscall trace events would build a record
 * of the arguments for every read and write on the node before our filter
 * even runs; that doubled the cost of small reads and writes.  Arguments
 * come from pt_regs at BTF offsets (x86-64 calling convention). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define MAX_ERRNO 4095

RAW_TRACEPOINT_PROBE(sys_enter)
{
	const void *regs = (const void *)ctx->args[0];
	long id = ctx->args[1];
	__u32 tgid;
	__u64 fd, buf, count;
	__u8 direction;
	int cri;

	if (id == NR_EXECVE || id == NR_EXECVEAT) {
		/* for exec_failed(), tracked processes only; sched_process_exec
		 * forgets it when the exec succeeds */
		remember_syscall(read_u64(regs, id == NR_EXECVE ? OFF_PT_REGS_DI : OFF_PT_REGS_SI), 0, 0, 0);
		return 0;
	}
	if (id != NR_READ && id != NR_WRITE && id != NR_READV && id != NR_WRITEV && id != NR_SENDTO &&
	    id != NR_RECVFROM && id != NR_SENDMSG && id != NR_RECVMSG)
		return 0;
	/* The common case, anyone's I/O: one or two lookups, then out. */
	tgid = bpf_get_current_pid_tgid() >> 32;
	cri = holds_cri_socket(tgid);
	/* runc writes the cgroup files (a CRI server never does for a pod) */
	if (!cri && (id != NR_WRITE || !is_tracked(tgid)))
		return 0;
	fd = read_u64(regs, OFF_PT_REGS_DI);
	buf = read_u64(regs, OFF_PT_REGS_SI);
	count = read_u64(regs, OFF_PT_REGS_DX);
	if (!cri) {
		cgroup_write(fd, (const char *)buf, count);
		return 0;
	}
	direction = (id == NR_WRITE || id == NR_WRITEV || id == NR_SENDTO || id == NR_SENDMSG) ?
			    SOCKET_DIRECTION_OUT : SOCKET_DIRECTION_IN;
	if (id == NR_SENDMSG || id == NR_RECVMSG)
		remember_msg(fd, (const void *)buf, direction, id);
	else
		remember_io(fd, buf, count, id == NR_READV || id == NR_WRITEV, direction, id);
	return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
	const void *regs = (const void *)ctx->args[0];
	long ret = ctx->args[1];
	long id;

	if (!holds_cri_socket(bpf_get_current_pid_tgid() >> 32)) {
		/* only failures go on: one compare for everything else */
		if (ret >= 0 || ret < -MAX_ERRNO)
			return 0;
		id = read_u64(regs, OFF_PT_REGS_ORIG_AX);
		if (id == NR_EXECVE || id == NR_EXECVEAT)
			exec_failed(ret);
		return 0;
	}
	id = read_u64(regs, OFF_PT_REGS_ORIG_AX);
	if (id == NR_READ || id == NR_WRITE || id == NR_SENDTO || id == NR_RECVFROM)
		emit_io(ret, 0);
	else if (id == NR_READV || id == NR_WRITEV || id == NR_SENDMSG || id == NR_RECVMSG)
		emit_io(ret, 1);
	return 0;
}
