/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process, namespace, mount and cgroup events of the container runtime's
 * process tree, for tracer/kernel/capture.py (bcc).
 *
 * Only raw tracepoints are used: many managed kernels have no kprobes and
 * refuse fentry/fexit, and a raw tracepoint detaches in a fraction of a
 * millisecond where a perf-event tracepoint takes ~70 ms (the kernel waits
 * for an RCU grace period per tracepoint).  Their arguments are the kernel's
 * own (task, cgroup, pt_regs pointers), read at BTF offsets like the rest.
 * The syscalls of interest all go through one sys_enter and one sys_exit
 * program, dispatched by syscall number: per-syscall trace events would each
 * add a probe to every syscall on the node.
 *
 * Kernel structs are never dereferenced through header types: the installed
 * headers rarely match the running kernel.  Every field is read at an offset
 * that userspace takes from /sys/kernel/btf/vmlinux and passes as a -D macro
 * (OFF_<STRUCT>_<FIELD>, see tracer/kernel/offsets.py).
 *
 * In-kernel filter: a process is traced when it is in `tracked`, which holds
 * the runtime daemons (seeded by userspace, or recognised by comm at exec)
 * and, through fork, all their descendants, which includes every container.
 *
 * The filters that every syscall consults (`tracked`, `cri_tgids`,
 * `pending_threads`) are arrays with one byte per process or thread id: the
 * verifier inlines an array lookup into a few instructions, where a hash
 * lookup is a helper call that hashes the key.  Each byte has one writer at
 * a time and is written whole, so no atomics are needed; userspace writes
 * its bytes through a shared mapping (BPF_F_MMAPABLE), not through a
 * read-modify-write of a whole 8-byte element.
 */
#include <uapi/linux/ptrace.h>
#include "events.h"
#include "kernel_read.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 8192
#endif

/* PID_MAX_LIMIT on 64-bit kernels: every pid and tgid is below it. */
#define ID_LIMIT (1 << 22)
#define ID_SLOTS (ID_LIMIT / 8)
#ifndef BPF_F_MMAPABLE
#define BPF_F_MMAPABLE (1U << 10)
#endif
#ifndef TRACER_PAGE_SHIFT
#define TRACER_PAGE_SHIFT 12
#endif
#define TS_COMPAT 0x0002            /* thread_info.status: a 32-bit syscall */
#define S_IFMT_BITS 0170000
#define S_IFSOCK_BITS 0140000
#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270
#define CNI_PREFIX_LEN 48
#define CNI_PREFIX_SLOTS 4

/* Statistic slots in `stats`, mirrored by tracer/kernel/capture.py. */
#define STAT_PENDING_MISSING 0
#define STAT_IO_TRUNCATED 1
#define STAT_ENDPOINTS_FULL 2
#define STAT_SLOTS 3
#ifndef SOCKET_MAX_SEGMENTS
#define SOCKET_MAX_SEGMENTS 8       /* per syscall: 8 segments of up to 8 KiB - 1 */
#endif
#define SOCKET_MAX_IOV 64
#define SOCKET_GATHER_LEN (SOCKET_SEGMENT_LEN - 1)  /* a mask: offsets and lengths below 8 KiB */
#define AF_UNIX_FAMILY 1
#define EINPROGRESS_ERRNO 115

/* One flag byte for each of eight consecutive ids. */
struct flags8 {
	__u8 flag[8];
};

struct comm_key {
	char comm[TASK_COMM_LEN];
};

struct cni_prefix {
	__u32 prefixlen;                 /* in bits, as LPM tries want */
	char prefix[CNI_PREFIX_LEN];
};

/* Syscall arguments kept from a syscall's entry to its exit, so that one event
 * carries both the arguments and the result. */
struct pending_syscall {
	__u64 args[4];
};

struct socket_path_key {
	char path[SOCKET_PATH_LEN];
};

/* struct sockaddr_un */
struct socket_address {
	__u16 family;
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
BPF_F_TABLE("array", __u32, struct flags8, tracked, ID_SLOTS, BPF_F_MMAPABLE);
BPF_HASH(runtime_comms, struct comm_key, __u8, 64);
BPF_LPM_TRIE(cni_prefixes, struct cni_prefix, __u8, CNI_PREFIX_SLOTS);
BPF_TABLE("lru_hash", __u64, __u64, pending_clone_flags, 16384);
BPF_TABLE("lru_hash", __u64, struct pending_syscall, pending_syscalls, 16384);
BPF_PERCPU_ARRAY(scratch, union scratch_event, 1);
/* CRI connections: the runtime sockets' paths (from userspace), every
 * endpoint by socket inode, and the processes that hold one, so that other
 * processes' reads and writes cost one array load. */
BPF_HASH(cri_paths, struct socket_path_key, __u8, 16);
BPF_HASH(cri_endpoints, __u64, struct socket_endpoint, 16384);
BPF_F_TABLE("array", __u32, struct flags8, cri_tgids, ID_SLOTS, BPF_F_MMAPABLE);
/* Threads whose syscall entry left something for its exit to finish. */
BPF_ARRAY(pending_threads, struct flags8, ID_SLOTS);
BPF_TABLE("lru_hash", __u64, struct pending_io, pending_ios, 16384);
/* Per endpoint inode: the directions (bit 1 out, bit 2 in) whose bytes the
 * ring buffer could not take; the next record of that direction carries
 * SOCKET_FLAG_GAP_BEFORE, so that the decoder knows where bytes are missing. */
BPF_TABLE("lru_hash", __u64, __u8, cri_gaps, 16384);
BPF_TABLE("lru_hash", __u64, struct socket_path_key, pending_connects, 1024);
BPF_PERCPU_ARRAY(lost, __u64, EVENT_TYPE_MAX);   /* by event type; slot 0: all types */
BPF_PERCPU_ARRAY(stats, __u64, STAT_SLOTS);

/* One function per map: bcc only rewrites map references written as
 * `map.method()`, so a map cannot be passed as an argument. */
static __always_inline void count_lost(int type)
{
	int all = 0;
	__u64 *counter = lost.lookup(&type);
	if (counter)
		*counter += 1;
	/* userspace polls this one slot and reads the others only when it moved */
	counter = lost.lookup(&all);
	if (counter)
		*counter += 1;
}

static __always_inline void count_stat(int slot)
{
	__u64 *counter = stats.lookup(&slot);
	if (counter)
		*counter += 1;
}

/* The flag byte of `id` in an element of a per-id array (NULL if the
 * lookup failed).  The lookups stay in the per-map functions below: bcc
 * only rewrites map references written as `map.method()`. */
static __always_inline __u8 *id_flag(struct flags8 *flags, __u32 id)
{
	return flags ? &flags->flag[id & 7] : 0;
}

static __always_inline int flag_is_set(const __u8 *flag)
{
	return flag && *flag;
}

static __always_inline void set_flag(__u8 *flag, __u8 value)
{
	if (flag)
		*flag = value;
}

static __always_inline __u8 *tracked_flag(__u32 tgid)
{
	__u32 slot = tgid / 8;
	return id_flag(tracked.lookup(&slot), tgid);
}

static __always_inline __u8 *cri_holder_flag(__u32 tgid)
{
	__u32 slot = tgid / 8;
	return id_flag(cri_tgids.lookup(&slot), tgid);
}

static __always_inline __u8 *pending_flag(__u32 pid)
{
	__u32 slot = pid / 8;
	return id_flag(pending_threads.lookup(&slot), pid);
}

static __always_inline int is_tracked(__u32 tgid)
{
	return flag_is_set(tracked_flag(tgid));
}

static __always_inline void set_tracked(__u32 tgid, __u8 value)
{
	set_flag(tracked_flag(tgid), value);
}

static __always_inline int holds_cri_socket(__u32 tgid)
{
	return flag_is_set(cri_holder_flag(tgid));
}

static __always_inline void set_cri_holder(__u32 tgid, __u8 value)
{
	set_flag(cri_holder_flag(tgid), value);
}

/* Marks the current thread: its syscall's exit has work to do. */
static __always_inline void mark_pending(void)
{
	set_flag(pending_flag(bpf_get_current_pid_tgid()), 1);
}

/* Whether the thread's syscall entry left work for its exit; clears it. */
static __always_inline int take_pending(__u32 pid)
{
	__u8 *flag = pending_flag(pid);

	if (!flag_is_set(flag))
		return 0;
	*flag = 0;
	return 1;
}

/* Per-syscall trace events skip 32-bit syscalls (their numbers mean other
 * syscalls); so does the dispatch by number here. */
static __always_inline int in_compat_syscall(void)
{
	return read_u32((const void *)bpf_get_current_task(), OFF_TASK_THREAD_STATUS) & TS_COMPAT;
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
 * drains on a short timer while events flow.  Exec and exit events wake it:
 * on an idle node its timer is slow, and those are the events that begin a
 * pod start, or whose files (a runc bundle, its log) userspace must read
 * before they are gone. */
static __always_inline int submit(void *event, __u32 size, __u16 type)
{
	__u64 flags = (type == EVENT_EXEC || type == EVENT_EXIT) ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;

	if (events.ringbuf_output(event, size, flags) != 0) {
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

/* For tracked processes (the caller checks). */
static __always_inline void remember_syscall(__u64 a0, __u64 a1, __u64 a2, __u64 a3)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_syscall pending = { .args = { a0, a1, a2, a3 } };

	pending_syscalls.update(&pid_tgid, &pending);
	mark_pending();
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

/* From clone, clone3 and vfork entry (sys_enter), for tracked processes;
 * sched_process_fork takes them. */
static __always_inline void remember_clone_flags(__u64 flags)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	pending_clone_flags.update(&pid_tgid, &flags);
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
	set_tracked(child_tgid, 1);

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

/* sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
RAW_TRACEPOINT_PROBE(sched_process_exec)
{
	const void *task = (const void *)bpf_get_current_task();
	const void *mm = read_ptr(task, OFF_TASK_MM);
	const void *bprm = (const void *)ctx->args[2];
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	union scratch_event *space;
	struct exec_event *event;
	__u64 arg_start, arg_end, env_start, env_end, argv_len, env_len;
	long filename_len;
	__u64 pid_tgid;
	__u32 size;

	if (!is_tracked(tgid)) {
		if (!is_runtime_comm())
			return 0;
		set_tracked(tgid, 1);
	}
	pid_tgid = bpf_get_current_pid_tgid();
	pending_syscalls.delete(&pid_tgid);  /* the execve entry: it did not fail */
	space = scratch_space();
	if (!space)
		return 0;
	event = &space->exec;
	event->old_pid = (__u32)ctx->args[1];
	event->flags = 0;
	event->_pad0 = 0;

	filename_len = bpf_probe_read_kernel_str(event->data, FILENAME_MAX_LEN,
						 read_ptr(bprm, OFF_LINUX_BINPRM_FILENAME));
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

/* sched_process_exit(struct task_struct *p, bool group_dead), once per thread */
RAW_TRACEPOINT_PROBE(sched_process_exit)
{
	const void *task = (const void *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct exit_event event = {};

	take_pending((__u32)pid_tgid);  /* a syscall that never returned */
	if (!(__u8)ctx->args[1])
		return 0;  /* not the last thread of its group */
	set_cri_holder(tgid, 0);
	if (!is_tracked(tgid))
		return 0;
	fill_header(&event.hdr, EVENT_EXIT, sizeof(event));
	event.exit_code = read_u32(task, OFF_TASK_EXIT_CODE);
	submit(&event, sizeof(event), EVENT_EXIT);
	set_tracked(tgid, 0);
	return 0;
}

/* ---- why a start failed ------------------------------------------------- */

/* An mm counter in KiB, as the mark_victim trace event computes it
 * (get_mm_counter: the counter's approximate value, never negative). */
static __always_inline __u64 mm_counter_kb(const void *mm, __u32 counter)
{
	__s64 pages = read_u64(mm, OFF_MM_RSS_STAT + counter * OFF_RSS_COUNTER_STRIDE + OFF_RSS_COUNTER_VALUE);

	return pages > 0 ? (__u64)pages << (TRACER_PAGE_SHIFT - 10) : 0;
}

/* The OOM killer's choice; the victim's SIGKILL exit follows.
 * mark_victim(struct task_struct *task, uid_t uid) */
RAW_TRACEPOINT_PROBE(mark_victim)
{
	const void *task = (const void *)ctx->args[0];
	const void *mm = read_ptr(task, OFF_TASK_MM);
	__u32 victim = read_u32(task, OFF_TASK_PID);
	struct oom_kill_event event = {};

	if (!is_tracked(victim) && !is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	fill_header(&event.hdr, EVENT_OOM_KILL, sizeof(event));
	event.victim_pid = victim;
	event.victim_oom_score_adj = (__s16)read_u16(read_ptr(task, OFF_TASK_SIGNAL), OFF_SIGNAL_OOM_SCORE_ADJ);
	event.total_vm_kb = read_u64(mm, OFF_MM_TOTAL_VM) << (TRACER_PAGE_SHIFT - 10);
	event.anon_rss_kb = mm_counter_kb(mm, OFF_MM_ANONPAGES);
	event.file_rss_kb = mm_counter_kb(mm, OFF_MM_FILEPAGES);
	event.shmem_rss_kb = mm_counter_kb(mm, OFF_MM_SHMEMPAGES);
	bpf_probe_read_kernel_str(event.victim_comm, sizeof(event.victim_comm), (const char *)task + OFF_TASK_COMM);
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

/* At unshare(2) or setns(2) exit; the arguments were kept at entry. */
static __always_inline void exit_namespace(__u32 syscall, long ret)
{
	struct pending_syscall call;
	struct namespace_event event = {};

	if (!recall_syscall(&call))
		return;
	fill_header(&event.hdr, EVENT_NAMESPACE, sizeof(event));
	event.syscall = syscall;
	event.flags = call.args[0];
	event.fd = syscall == NS_SYSCALL_SETNS ? (__s32)call.args[1] : -1;
	event.ret = ret;
	submit(&event, sizeof(event), EVENT_NAMESPACE);
}

/* ---- mounts ------------------------------------------------------------- */

static __always_inline void exit_mount(long ret)
{
	struct pending_syscall call;
	union scratch_event *space;
	struct mount_event *event;

	if (!recall_syscall(&call))
		return;
	space = scratch_space();
	if (!space)
		return;
	event = &space->mount;
	/* The scratch space holds the previous event's bytes (an environment,
	 * say): clear it, since this event is sent whole. */
	__builtin_memset(event, 0, sizeof(*event));
	event->ret = ret;
	event->flags = call.args[3];
	bpf_probe_read_user_str(event->source, sizeof(event->source), (void *)call.args[0]);
	bpf_probe_read_user_str(event->target, sizeof(event->target), (void *)call.args[1]);
	bpf_probe_read_user_str(event->fstype, sizeof(event->fstype), (void *)call.args[2]);
	fill_header(&event->hdr, EVENT_MOUNT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_MOUNT);
}

static __always_inline void exit_pivot_root(long ret)
{
	struct pending_syscall call;
	union scratch_event *space;
	struct pivot_root_event *event;

	if (!recall_syscall(&call))
		return;
	space = scratch_space();
	if (!space)
		return;
	event = &space->pivot_root;
	__builtin_memset(event, 0, sizeof(*event));
	event->ret = ret;
	bpf_probe_read_user_str(event->new_root, sizeof(event->new_root), (void *)call.args[0]);
	bpf_probe_read_user_str(event->put_old, sizeof(event->put_old), (void *)call.args[1]);
	fill_header(&event->hdr, EVENT_PIVOT_ROOT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_PIVOT_ROOT);
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

/* What the cgroup trace events report of a struct cgroup: its hierarchy's
 * id, its level and its id (cgroup_id(): the kernfs node's id). */
static __always_inline void emit_cgroup_of(__u16 type, const void *cgroup, const char *path, __u32 target_pid)
{
	const void *root = read_ptr(cgroup, OFF_CGROUP_ROOT);

	emit_cgroup(type, (int)read_u32(root, OFF_CGROUP_ROOT_HIERARCHY_ID), (int)read_u32(cgroup, OFF_CGROUP_LEVEL),
		    read_u64(read_ptr(cgroup, OFF_CGROUP_KN), OFF_KERNFS_NODE_ID), target_pid, path);
}

/* cgroup_mkdir(struct cgroup *cgrp, const char *path) */
RAW_TRACEPOINT_PROBE(cgroup_mkdir)
{
	if (!is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_cgroup_of(EVENT_CGROUP_MKDIR, (const void *)ctx->args[0], (const char *)ctx->args[1], 0);
	return 0;
}

/* cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct task_struct *task, bool threadgroup) */
RAW_TRACEPOINT_PROBE(cgroup_attach_task)
{
	if (!is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_cgroup_of(EVENT_CGROUP_ATTACH, (const void *)ctx->args[0], (const char *)ctx->args[1],
		       read_u32((const void *)ctx->args[2], OFF_TASK_PID));
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

static __always_inline void register_endpoint(__u32 fd, __u8 side, const struct socket_path_key *path)
{
	const void *file = fd_file(fd);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
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
	set_cri_holder(tgid, 1);
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

/* Whether a socket address names a runtime socket; `key` gets the path
 * as compared.  grpc-core uses "///run/…": compare with one leading slash. */
static __always_inline int is_cri_path(const struct socket_address *address, struct socket_path_key *key)
{
	int skip = 0;

	if (address->family != AF_UNIX_FAMILY)
		return 0;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (address->path[i] == '/' && address->path[i + 1] == '/')
			skip = i + 1;
		else
			break;
	}
	bpf_probe_read_kernel_str(key->path, sizeof(key->path), address->path + (skip & 7));
	return cri_paths.lookup(key) != 0;
}

/* Whether a unix sock is bound to a runtime socket's path (a listener, or
 * an accepted end, which shares its listener's address); `key` gets it. */
static __always_inline int bound_to_cri_path(const void *sk, struct socket_path_key *key)
{
	const void *bound;
	struct socket_address address = {};

	if (!sk || read_u16(sk, OFF_SOCK_FAMILY) != AF_UNIX_FAMILY)
		return 0;
	bound = read_ptr(sk, OFF_UNIX_SOCK_ADDR);
	if (!bound)
		return 0;
	if (bpf_probe_read_kernel(&address, sizeof(address), (const char *)bound + OFF_UNIX_ADDRESS_NAME) != 0)
		return 0;
	return is_cri_path(&address, key);
}

/* connect(2) entry, any process: a unix socket connecting to a runtime
 * socket.  A path that names one is known now; any other filesystem path
 * (a symlink, a relative path, another spelling) may still lead to one:
 * that is told at the exit, by the path the other end is bound to. */
static __always_inline void enter_connect(const void *regs)
{
	struct socket_address address = {};
	struct socket_path_key key = {};
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 fd = read_u64(regs, OFF_PT_REGS_DI);

	if (bpf_probe_read_user(&address, sizeof(address), (void *)read_u64(regs, OFF_PT_REGS_SI)) != 0)
		return;
	if (address.family != AF_UNIX_FAMILY || address.path[0] == 0)
		return;  /* not a unix socket's filesystem path (abstract names are never runtime sockets here) */
	if (!is_cri_path(&address, &key))
		key.path[0] = 0;  /* decided at the exit */
	struct pending_syscall pending = { .args = { fd, 0, 0, 0 } };

	pending_connects.update(&pid_tgid, &key);
	pending_syscalls.update(&pid_tgid, &pending);
	mark_pending();
}

static __always_inline void exit_connect(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct socket_path_key *key = pending_connects.lookup(&pid_tgid);
	struct socket_path_key peer_key = {};
	struct pending_syscall call;
	const void *file, *sk;

	if (!key)
		return;
	if ((ret == 0 || ret == -EINPROGRESS_ERRNO) && recall_syscall_any(&call)) {
		if (key->path[0]) {
			register_endpoint(call.args[0], SOCKET_SIDE_CLIENT, key);
		} else if (ret == 0 && (file = fd_file(call.args[0])) != 0) {
			/* connected: our peer is the runtime's new end, bound as its listener is */
			sk = read_ptr(read_ptr(file, OFF_FILE_PRIVATE_DATA), OFF_SOCKET_SK);
			if (bound_to_cri_path(read_ptr(sk, OFF_UNIX_SOCK_PEER), &peer_key))
				register_endpoint(call.args[0], SOCKET_SIDE_CLIENT, &peer_key);
		}
	}
	pending_connects.delete(&pid_tgid);
}

/* A listening unix socket bound to a runtime socket's path, read from the
 * socket itself: a runtime that restarts (a new socket on the same path)
 * needs nothing from userspace. */
static __always_inline int is_cri_listener(const void *file)
{
	struct socket_path_key key = {};

	if ((read_u16(read_ptr(file, OFF_FILE_F_INODE), OFF_INODE_I_MODE) & S_IFMT_BITS) != S_IFSOCK_BITS)
		return 0;
	return bound_to_cri_path(read_ptr(read_ptr(file, OFF_FILE_PRIVATE_DATA), OFF_SOCKET_SK), &key);
}

/* accept(2)/accept4(2) entry, any process: on a runtime's listening socket? */
static __always_inline void enter_accept(const void *regs)
{
	__u32 listening_fd = read_u64(regs, OFF_PT_REGS_DI);
	const void *file = fd_file(listening_fd);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_syscall pending = { .args = { listening_fd, 0, 0, 0 } };

	if (!file || !is_cri_listener(file))
		return;
	pending_syscalls.update(&pid_tgid, &pending);
	mark_pending();
}

static __always_inline void accepted(long ret)
{
	struct pending_syscall call;

	if (!recall_syscall_any(&call))
		return;
	if (ret >= 0)
		register_endpoint((__u32)ret, SOCKET_SIDE_SERVER, 0);
}

/* close(2) entry by a process holding a CRI connection. */
static __always_inline void enter_close(const void *regs)
{
	const void *file;
	__u64 inode;
	struct socket_endpoint *endpoint;
	struct socket_close_event event = {};

	file = fd_file((__u32)read_u64(regs, OFF_PT_REGS_DI));
	if (!file)
		return;

	inode = file_inode_number(file);
	endpoint = cri_endpoints.lookup(&inode);
	if (!endpoint)
		return;
	event.endpoint = *endpoint;
	cri_endpoints.delete(&inode);
	cri_gaps.delete(&inode);
	fill_header(&event.hdr, EVENT_SOCKET_CLOSE, sizeof(event));
	submit(&event, sizeof(event), EVENT_SOCKET_CLOSE);
}

/* A read or write by a process that holds a CRI connection (the caller
 * checked): kept for the exit if the fd is one of the endpoints. */
static __always_inline void remember_io(__u32 fd, __u64 buffer, __u64 count, __u8 vectored,
					__u8 direction, __u16 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	const void *file;
	__u64 inode;
	struct pending_io pending = {};

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
	mark_pending();
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
 * through the loop, which keeps the verifier's work linear in its length.
 * A bounded loop, not unrolled: unrolling its 64 turns cost ~0.2 s of
 * compiling at every start, for ~40 ms less verifying. */
static __always_inline __u32 emit_gathered(struct socket_data_event *event, __u64 iov_array, __u64 iov_count,
					   __u32 total, __u32 *lost)
{
	__u64 used = 0;
	__u32 size;

#pragma clang loop unroll(disable)
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

	if (bpf_probe_read_user(iov, sizeof(iov), (const char *)msg + 16) != 0)
		return;
	remember_io(fd, iov[0], iov[1], 1, direction, syscall);
}

/* ---- the syscalls: one program at entry, one at exit ------------------------ */

/* x86-64 syscall numbers.  Arguments come from pt_regs at BTF offsets. */
#define NR_READ 0
#define NR_WRITE 1
#define NR_CLOSE 3
#define NR_READV 19
#define NR_WRITEV 20
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_CLONE 56
#define NR_VFORK 58
#define NR_EXECVE 59
#define NR_PIVOT_ROOT 155
#define NR_MOUNT 165
#define NR_UNSHARE 272
#define NR_ACCEPT4 288
#define NR_SETNS 308
#define NR_EXECVEAT 322
#define NR_CLONE3 435
#define MAX_ERRNO 4095

#define NR_BIT(nr) (1ULL << (nr))
#define IO_SYSCALLS (NR_BIT(NR_READ) | NR_BIT(NR_WRITE) | NR_BIT(NR_READV) | NR_BIT(NR_WRITEV) | \
		     NR_BIT(NR_SENDTO) | NR_BIT(NR_RECVFROM) | NR_BIT(NR_SENDMSG) | NR_BIT(NR_RECVMSG))
/* every handled syscall numbered below 64, as one mask */
#define LOW_SYSCALLS (IO_SYSCALLS | NR_BIT(NR_CLOSE) | NR_BIT(NR_CONNECT) | NR_BIT(NR_ACCEPT) | \
		      NR_BIT(NR_CLONE) | NR_BIT(NR_VFORK) | NR_BIT(NR_EXECVE))
/* vfork(2) has no flags argument; these are the ones it implies. */
#define VFORK_CLONE_FLAGS (0x00004000 /* CLONE_VFORK */ | 0x00000100 /* CLONE_VM */ | 17 /* SIGCHLD */)

/* The read and write families: anyone's I/O costs one array load, then out.
 * A CRI connection's bytes are kept for the exit; runc's writes to cgroup
 * files are sent at entry. */
static __always_inline void enter_io(const void *regs, __u64 id, __u32 tgid)
{
	__u64 fd, buf, count;
	__u8 direction;
	int cri = holds_cri_socket(tgid);

	/* runc writes the cgroup files (a CRI server never does for a pod) */
	if (!cri && (id != NR_WRITE || !is_tracked(tgid)))
		return;
	if (in_compat_syscall())
		return;
	fd = read_u64(regs, OFF_PT_REGS_DI);
	buf = read_u64(regs, OFF_PT_REGS_SI);
	count = read_u64(regs, OFF_PT_REGS_DX);
	if (!cri) {
		cgroup_write(fd, (const char *)buf, count);
		return;
	}
	direction = (id == NR_WRITE || id == NR_WRITEV || id == NR_SENDTO || id == NR_SENDMSG) ?
			    SOCKET_DIRECTION_OUT : SOCKET_DIRECTION_IN;
	if (id == NR_SENDMSG || id == NR_RECVMSG)
		remember_msg(fd, (const void *)buf, direction, id);
	else
		remember_io(fd, buf, count, id == NR_READV || id == NR_WRITEV, direction, id);
}

/* Process-tree syscalls of tracked processes: keep what the exit (or
 * sched_process_fork, for the clone flags) needs. */
static __always_inline void enter_tracked(const void *regs, __u64 id)
{
	__u64 flags = 0;

	switch (id) {
	case NR_CLONE:
		remember_clone_flags(read_u64(regs, OFF_PT_REGS_DI));
		break;
	case NR_CLONE3:
		/* clone_args.flags is the first member of the user's struct */
		bpf_probe_read_user(&flags, sizeof(flags), (void *)read_u64(regs, OFF_PT_REGS_DI));
		remember_clone_flags(flags);
		break;
	case NR_VFORK:
		remember_clone_flags(VFORK_CLONE_FLAGS);
		break;
	case NR_EXECVE:
		/* for exec_failed(); sched_process_exec forgets it when the exec succeeds */
		remember_syscall(read_u64(regs, OFF_PT_REGS_DI), 0, 0, 0);
		break;
	case NR_EXECVEAT:
		remember_syscall(read_u64(regs, OFF_PT_REGS_SI), 0, 0, 0);
		break;
	case NR_UNSHARE:
		remember_syscall(read_u64(regs, OFF_PT_REGS_DI), 0, 0, 0);
		break;
	case NR_SETNS:
		/* setns(fd, nstype): kept as (nstype, fd) */
		remember_syscall(read_u64(regs, OFF_PT_REGS_SI), read_u64(regs, OFF_PT_REGS_DI), 0, 0);
		break;
	case NR_MOUNT:
		/* mount(source, target, fstype, flags, data) */
		remember_syscall(read_u64(regs, OFF_PT_REGS_DI), read_u64(regs, OFF_PT_REGS_SI),
				 read_u64(regs, OFF_PT_REGS_DX), read_u64(regs, OFF_PT_REGS_R10));
		break;
	case NR_PIVOT_ROOT:
		remember_syscall(read_u64(regs, OFF_PT_REGS_DI), read_u64(regs, OFF_PT_REGS_SI), 0, 0);
		break;
	}
}

/* sys_enter(struct pt_regs *regs, long id): every syscall on the node. */
RAW_TRACEPOINT_PROBE(sys_enter)
{
	const void *regs = (const void *)ctx->args[0];
	__u64 id = ctx->args[1];
	__u32 tgid;

	/* Leave at once unless it is one of ours: a mask test, or a few compares. */
	if (id < 64) {
		if (!(NR_BIT(id) & LOW_SYSCALLS))
			return 0;
	} else if (id != NR_PIVOT_ROOT && id != NR_MOUNT && id != NR_UNSHARE && id != NR_ACCEPT4 &&
		   id != NR_SETNS && id != NR_EXECVEAT && id != NR_CLONE3) {
		return 0;
	}
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (id < 64 && (NR_BIT(id) & IO_SYSCALLS)) {
		enter_io(regs, id, tgid);
		return 0;
	}
	switch (id) {
	case NR_CLOSE:
		if (holds_cri_socket(tgid) && !in_compat_syscall())
			enter_close(regs);
		return 0;
	case NR_CONNECT:
		if (!in_compat_syscall())
			enter_connect(regs);
		return 0;
	case NR_ACCEPT:
	case NR_ACCEPT4:
		if (!in_compat_syscall())
			enter_accept(regs);
		return 0;
	}
	if (is_tracked(tgid) && !in_compat_syscall())
		enter_tracked(regs, id);
	return 0;
}

static __always_inline void exit_exec(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (ret < 0 && ret >= -MAX_ERRNO)
		exec_failed(ret);
	else
		pending_syscalls.delete(&pid_tgid);  /* sched_process_exec did, unless the thread id changed */
}

/* sys_exit(struct pt_regs *regs, long ret): every syscall on the node;
 * only a thread whose entry marked itself goes past one array load. */
RAW_TRACEPOINT_PROBE(sys_exit)
{
	const void *regs = (const void *)ctx->args[0];
	long ret = ctx->args[1];
	long id;

	if (!take_pending((__u32)bpf_get_current_pid_tgid()))
		return 0;
	id = read_u64(regs, OFF_PT_REGS_ORIG_AX);
	switch (id) {
	case NR_READ:
	case NR_WRITE:
	case NR_SENDTO:
	case NR_RECVFROM:
		emit_io(ret, 0);
		break;
	case NR_READV:
	case NR_WRITEV:
	case NR_SENDMSG:
	case NR_RECVMSG:
		emit_io(ret, 1);
		break;
	case NR_CONNECT:
		exit_connect(ret);
		break;
	case NR_ACCEPT:
	case NR_ACCEPT4:
		accepted(ret);
		break;
	case NR_EXECVE:
	case NR_EXECVEAT:
		exit_exec(ret);
		break;
	case NR_UNSHARE:
		exit_namespace(NS_SYSCALL_UNSHARE, ret);
		break;
	case NR_SETNS:
		exit_namespace(NS_SYSCALL_SETNS, ret);
		break;
	case NR_MOUNT:
		exit_mount(ret);
		break;
	case NR_PIVOT_ROOT:
		exit_pivot_root(ret);
		break;
	}
	return 0;
}
