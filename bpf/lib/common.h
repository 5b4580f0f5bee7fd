/* SPDX-License-Identifier: Apache-2.0 */
/* What every program shares: the ring buffer, the per-id filter arrays,
 * the event header, submission, and the arguments kept from a syscall's
 * entry to its exit. */
#ifndef TRACER_COMMON_H
#define TRACER_COMMON_H

#include "events.h"
#include "kernel_read.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 8192
#endif

/* Which design this build is (tracer/kernel/capture.py decides, from the
 * kernel's tracepoints):
 *   1: CRI bytes from the sock:sock_send_length/sock_recv_length raw
 *      tracepoints, which only socket I/O runs, and one sys_exit program
 *      that userspace attaches only while the runtime works (arming.h);
 *   0: the fallback for kernels without those tracepoints: one sys_enter
 *      and one sys_exit program, attached all the time, see every syscall
 *      on the node. */
#ifndef TRACER_SOCKET_TRACEPOINTS
#define TRACER_SOCKET_TRACEPOINTS 1
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
#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270

/* Statistic slots in `stats`, mirrored by tracer/kernel/capture.py. */
#define STAT_PENDING_MISSING 0
#define STAT_IO_TRUNCATED 1
#define STAT_ENDPOINTS_FULL 2
#define STAT_SOCKET_IO_UNREADABLE 3  /* CRI bytes moved by a syscall whose buffer is not known (splice, io_uring) */
#define STAT_WORKERS_FULL 4          /* a runtime worker the `workers` map had no room for */
#define STAT_REGS_MISMATCH 5         /* bpf_task_pt_regs() disagreed with sys_exit's own registers */
/* A thread born while the syscall program was detached, found to have done,
 * before it was attached, what the program would have shown (arming.h): */
#define STAT_LATE_NAMESPACES 6       /* changed namespaces */
#define STAT_LATE_WRITES 7           /* made a write */
#define STAT_LATE_MOUNTS 8           /* changed its mount namespace */
#define STAT_LATE_UNKNOWN 9          /* cannot tell (its baseline was evicted, or the kernel keeps no such traces) */
#define STAT_SLOTS 10


/* One flag byte for each of eight consecutive ids. */
struct flags8 {
	__u8 flag[8];
};

#if !TRACER_SOCKET_TRACEPOINTS
/* Syscall arguments kept from a syscall's entry to its exit, so that one event
 * carries both the arguments and the result (the fallback; the armed sys_exit
 * reads them from the registers the syscall was made with). */
struct pending_syscall {
	__u64 args[4];
};
#endif

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
BPF_PERCPU_ARRAY(scratch, union scratch_event, 1);
/* The processes holding a CRI connection (cri_socket.h): their socket I/O
 * is looked up among the endpoints, anyone else's only when it might be a
 * new one. */
BPF_F_TABLE("array", __u32, struct flags8, cri_tgids, ID_SLOTS, BPF_F_MMAPABLE);
#if !TRACER_SOCKET_TRACEPOINTS
BPF_TABLE("lru_hash", __u64, __u64, pending_clone_flags, 16384);
BPF_TABLE("lru_hash", __u64, struct pending_syscall, pending_syscalls, 16384);
/* Threads whose syscall entry left something for its exit to finish. */
BPF_ARRAY(pending_threads, struct flags8, ID_SLOTS);
#endif
BPF_PERCPU_ARRAY(lost, __u64, EVENT_TYPE_MAX);   /* by event type; slot 0: all types */
BPF_PERCPU_ARRAY(stats, __u64, STAT_SLOTS);
/* Bytes submitted since a wake-up was last asked for.  Idle, the drain
 * sleeps up to 100 ms unless woken (exec and exit events wake it), and a
 * burst of CRI bytes (a 16 MiB message) fills the ring sooner than that:
 * every eighth of the ring it is woken. */
BPF_ARRAY(unwoken_bytes, __u64, 1);
#define RINGBUF_WAKE_BYTES ((__u64)RINGBUF_PAGES * 4096 / 8)

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

#if TRACER_SOCKET_TRACEPOINTS
/* The registers the current task entered its syscall with (the top of its
 * kernel stack): what the syscall was asked for, read from programs that
 * run inside it (a socket tracepoint, the fork tracepoint) without a
 * syscall program. */
static __always_inline const void *current_regs(void)
{
	return (const void *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

static __always_inline int in_kernel_thread(void)
{
	return read_u32((const void *)bpf_get_current_task(), OFF_TASK_FLAGS) & 0x00200000;  /* PF_KTHREAD */
}
#endif

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
	int zero = 0;
	__u64 *unwoken = unwoken_bytes.lookup(&zero);

	if (unwoken && __sync_fetch_and_add(unwoken, size) >= RINGBUF_WAKE_BYTES) {
		*unwoken = 0;
		flags = BPF_RB_FORCE_WAKEUP;
	}
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

#if !TRACER_SOCKET_TRACEPOINTS
static __always_inline __u8 *pending_flag(__u32 pid)
{
	__u32 slot = pid / 8;
	return id_flag(pending_threads.lookup(&slot), pid);
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

#endif

#endif /* TRACER_COMMON_H */
