/* SPDX-License-Identifier: Apache-2.0 */
/* Process life of the runtime's tree: fork, exec, exit; what the OOM
 * killer chose; failed execs. */
#ifndef TRACER_PROCESS_H
#define TRACER_PROCESS_H

#include "lib/common.h"

#define CNI_PREFIX_LEN 48
#define CNI_PREFIX_SLOTS 4

struct comm_key {
	char comm[TASK_COMM_LEN];
};

struct cni_prefix {
	__u32 prefixlen;                 /* in bits, as LPM tries want */
	char prefix[CNI_PREFIX_LEN];
};

/* Runtime daemons recognised by comm at exec (from userspace), and the
 * CNI plugin directories. */
BPF_HASH(runtime_comms, struct comm_key, __u8, 64);
BPF_LPM_TRIE(cni_prefixes, struct cni_prefix, __u8, CNI_PREFIX_SLOTS);

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

#endif /* TRACER_PROCESS_H */
