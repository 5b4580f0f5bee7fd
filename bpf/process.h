/* SPDX-License-Identifier: Apache-2.0 */
/* Process life of the runtime's tree: fork, exec, exit; what the OOM
 * killer chose; failed execs. */
#ifndef TRACER_PROCESS_H
#define TRACER_PROCESS_H

#include "lib/common.h"
#include "syscalls.h"
#if TRACER_SOCKET_TRACEPOINTS
#include "arming.h"
#endif

#define CNI_PREFIX_LEN 48
#define CNI_PREFIX_SLOTS 4
/* What a comm is, as bits of its value in `runtime_comms` (tracer/runtimes.py) */
#define COMM_RUNTIME 0x1        /* a runtime daemon: its process tree is traced */
#define COMM_WORKER 0x2         /* a runtime worker: its syscalls are shown (runc) */
#define COMM_WAKES 0x4          /* its exec asks for the syscall program (a shim: runc follows) */
/* `tracked` byte values: bit 0 tracked; bit 1 a worker the `workers` map had
 * no room for (nothing vouches that its syscalls were all seen) */
#define TRACKED 0x1
#define TRACKED_UNVOUCHED 0x2

struct comm_key {
	char comm[TASK_COMM_LEN];
};

struct cni_prefix {
	__u32 prefixlen;                 /* in bits, as LPM tries want */
	char prefix[CNI_PREFIX_LEN];
};

/* Runtime daemons and workers recognised by comm at exec (from userspace;
 * the value's COMM_* bits say which), and the CNI plugin directories (their
 * plugins are workers). */
BPF_HASH(runtime_comms, struct comm_key, __u8, 64);
BPF_LPM_TRIE(cni_prefixes, struct cni_prefix, __u8, CNI_PREFIX_SLOTS);

/* ---- process lifecycle ------------------------------------------------ */

#if TRACER_SOCKET_TRACEPOINTS
/* The clone flags the parent asked for, from its syscall's registers (the
 * fork tracepoint runs inside clone, clone3 or vfork); 0 for fork(). */
static __always_inline __u64 clone_flags_asked(void)
{
	const void *regs = current_regs();
	__u64 flags = 0;

	if (in_compat_syscall())
		return 0;
	switch (read_u64(regs, OFF_PT_REGS_ORIG_AX)) {
	case NR_CLONE:
		return read_u64(regs, OFF_PT_REGS_DI);
	case NR_CLONE3:
		/* clone_args.flags is the first member of the user's struct */
		bpf_probe_read_user(&flags, sizeof(flags), (void *)read_u64(regs, OFF_PT_REGS_DI));
		return flags;
	case NR_VFORK:
		return VFORK_CLONE_FLAGS;
	}
	return 0;
}
#else
/* From clone, clone3 and vfork entry (sys_enter), for tracked processes;
 * sched_process_fork takes them. */
static __always_inline void remember_clone_flags(__u64 flags)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	pending_clone_flags.update(&pid_tgid, &flags);
}

static __always_inline __u64 clone_flags_asked(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 *flags = pending_clone_flags.lookup(&pid_tgid);
	__u64 value;

	if (!flags)
		return 0;
	value = *flags;
	pending_clone_flags.delete(&pid_tgid);
	return value;
}
#endif

/* Raw tracepoint: it hands over the child task itself, which the plain
 * tracepoint does not, and we need the child's tgid and start time. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	const void *child = (const void *)ctx->args[1];
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fork_event event = {};
	__u32 child_pid, child_tgid;

	if (!is_tracked(pid_tgid >> 32))
		return 0;
	child_pid = read_u32(child, OFF_TASK_PID);
	child_tgid = read_u32(child, OFF_TASK_TGID);
	if (child_pid != child_tgid) {
#if TRACER_SOCKET_TRACEPOINTS
		worker_thread_born(child, child_pid, child_tgid);
#endif
		return 0; /* a thread: processes are the unit we trace */
	}
	set_tracked(child_tgid, TRACKED);
#if TRACER_SOCKET_TRACEPOINTS
	{
		__u32 parent_tgid = pid_tgid >> 32;
		struct worker *parent = workers.lookup(&parent_tgid);

		if (parent && !worker_born(child, child_pid, child_tgid, parent->cni))
			set_tracked(child_tgid, TRACKED | TRACKED_UNVOUCHED);
	}
#endif

	fill_header(&event.hdr, EVENT_FORK, sizeof(event));
	event.child_pid = child_pid;
	event.child_tgid = child_tgid;
	event.child_start_ns = read_u64(child, OFF_TASK_START_TIME);
	event.clone_flags = clone_flags_asked();
	submit(&event, sizeof(event), EVENT_FORK);
	return 0;
}

/* The COMM_* bits of the current task's comm (0: none of ours). */
static __always_inline __u8 comm_role(void)
{
	struct comm_key key = {};
	__u8 *role;

	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	role = runtime_comms.lookup(&key);
	return role ? *role : 0;
}

/* CNI plugin directories live in an LPM trie, so that "is this path under
 * one of them" is a single longest-prefix lookup instead of a byte loop. */
static __always_inline int has_cni_prefix(const char *filename)
{
	struct cni_prefix key = { .prefixlen = CNI_PREFIX_LEN * 8 };

	__builtin_memcpy(key.prefix, filename, CNI_PREFIX_LEN);
	return cni_prefixes.lookup(&key) != 0;
}

#if TRACER_SOCKET_TRACEPOINTS
/* The same program again, re-executed through /proc/self/exe or a file
 * descriptor (runc init does both): it keeps its role. */
static __always_inline int self_reexec(const char *filename)
{
	char head[12] = {};

	__builtin_memcpy(head, filename, sizeof(head));
	return (head[0] == '/' && head[1] == 'p' && head[2] == 'r' && head[3] == 'o' && head[4] == 'c' &&
		head[5] == '/' && head[6] == 's' && head[7] == 'e' && head[8] == 'l' && head[9] == 'f' &&
		head[10] == '/') ||
	       (head[0] == '/' && head[1] == 'd' && head[2] == 'e' && head[3] == 'v' && head[4] == '/' &&
		head[5] == 'f' && head[6] == 'd' && head[7] == '/');
}

/* One word (an argv word, an environment variable) at a time, for
 * words_hold(); bpf_probe_read_kernel_str() into it measures a word. */
#define WORD_SCRATCH_LEN 256
struct word_scratch {
	char bytes[WORD_SCRATCH_LEN];
};
BPF_PERCPU_ARRAY(word_scratch, struct word_scratch, 1);

/* Which of two words (each 16 bytes with its NUL, in the bits of its masks:
 * bit 0 for `a`, bit 1 for `b`) are among the first `limit` NUL-separated
 * words of the `len` bytes at the user address `base` (an argv, an
 * environment).  It hops from word to word (a word longer than the scratch
 * is hopped in pieces), so the loop is as long as an argv has words, not
 * bytes; it reads user memory, not the event's copy, whose offsets the
 * verifier would track exactly and never merge the turns of the loop. */
struct word_pattern {
	__u64 first, first_mask, second, second_mask;
};

static __always_inline int words_found(__u64 base, __u32 len, const struct word_pattern *a,
				       const struct word_pattern *b, const __u32 limit)
{
	int zero = 0, found = 0;
	struct word_scratch *scratch = word_scratch.lookup(&zero);
	__u32 at = 0;
	__u64 words[2];
	long word_len;

	if (!scratch)
		return 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < limit; i++) {
		if (at >= len)
			break;
		word_len = bpf_probe_read_user_str(scratch->bytes, WORD_SCRATCH_LEN, (const void *)(base + at));
		if (word_len <= 0)
			break;
		/* a longer word cannot match: the pattern's NUL falls inside it */
		__builtin_memcpy(words, scratch->bytes, sizeof(words));
		found |= ((words[0] & a->first_mask) == a->first && (words[1] & a->second_mask) == a->second) |
			 (((words[0] & b->first_mask) == b->first && (words[1] & b->second_mask) == b->second) << 1);
		at += word_len;  /* past its NUL (or the piece read) */
	}
	return found;
}

#define ARGV_WORDS 24              /* runc's subcommand comes after a few global flags */
#define ENV_WORDS 64

/* A runtime worker's exec that makes a container or a pod network: `runc
 * create` or `runc run` (not kill, delete, state, start: their syscalls are
 * in no trace, and a pod's stop would otherwise keep the program attached
 * as long as its start), a CNI plugin's ADD (not DEL, CHECK, VERSION).  A
 * CNI plugin whose CNI_COMMAND is not among the variables looked at counts
 * as an ADD. */
static __always_inline int starts_something(const void *mm, __u8 role, int cni)
{
	/* "create\0", "run\0"; "CNI_COMMAND=ADD\0", "CNI_COMM…" as little-endian words */
	const struct word_pattern create = { 0x0000657461657263ULL, 0x00ffffffffffffffULL, 0, 0 };
	const struct word_pattern run = { 0x006e7572ULL, 0xffffffffULL, 0, 0 };
	const struct word_pattern add = { 0x4d4d4f435f494e43ULL, ~0ULL, 0x004444413d444e41ULL, ~0ULL };
	const struct word_pattern any_command = { 0x4d4d4f435f494e43ULL, ~0ULL, 0, 0 };
	__u64 start, end;
	int found;

	if (role & COMM_WORKER) {
		start = read_u64(mm, OFF_MM_ARG_START);
		end = read_u64(mm, OFF_MM_ARG_END);
		return words_found(start, end > start ? end - start : 0, &create, &run, ARGV_WORDS) != 0;
	}
	if (!cni)
		return 0;
	start = read_u64(mm, OFF_MM_ENV_START);
	end = read_u64(mm, OFF_MM_ENV_END);
	found = words_found(start, end > start ? end - start : 0, &add, &any_command, ENV_WORDS);
	return (found & 1) || !(found & 2);
}

/* What a process's EXEC or EXIT event says of its time unhooked
 * (UNWATCHED_*): what arming.h saw of the worker, and whether the workers
 * map had room to follow it (`tracked`, its TRACKED_* flags). */
static __always_inline __u32 unwatched_causes(const struct worker *worker, __u8 tracked)
{
	__u32 causes = worker ? worker_unwatched_causes(worker) : 0;

	if (tracked & TRACKED_UNVOUCHED)
		causes |= UNWATCHED_UNVOUCHED;
	return causes;
}

/* At a tracked exec, in sched_process_exec itself: what the image that
 * called exec left unseen (its event's flag). */
static __always_inline void exec_settle(struct exec_event *event, __u8 *tracked, __u32 tgid)
{
	struct worker *was = workers.lookup(&tgid);
	__u32 causes;

	settle_unwatched(event->old_pid, tgid, 0);
	causes = unwatched_causes(was, tracked ? *tracked : 0);
	if (causes)
		event->flags |= EXEC_FLAG_UNWATCHED | (causes << UNWATCHED_CAUSE_SHIFT);
	set_flag(tracked, TRACKED);
}

/* Then, in a program of its own (exec_classify, tail-called: the verifier
 * checks its loops apart from the exec event's many paths): whether the new
 * image is a runtime worker (arming.h). */
BPF_PROG_ARRAY(exec_tail, 1);

int exec_classify(struct bpf_raw_tracepoint_args *ctx)
{
	const void *task = (const void *)bpf_get_current_task();
	const void *mm = read_ptr(task, OFF_TASK_MM);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct worker *was = workers.lookup(&tgid);
	struct cni_prefix key = { .prefixlen = CNI_PREFIX_LEN * 8 };
	char *filename = key.prefix;
	__u8 role = comm_role();
	int cni;

	bpf_probe_read_kernel_str(key.prefix, CNI_PREFIX_LEN, read_ptr((const void *)ctx->args[2],
									 OFF_LINUX_BINPRM_FILENAME));
	cni = cni_prefixes.lookup(&key) != 0;
	if (starts_something(mm, role, cni) || (was && self_reexec(filename))) {
		if (!worker_born(task, tgid, tgid, cni || (was && was->cni)))
			set_tracked(tgid, TRACKED | TRACKED_UNVOUCHED);
	} else {
		if (was)
			worker_ends(tgid);
		if (role & COMM_WAKES)
			request_hooks();
	}
	return 0;
}
#endif

/* Copies the exec'd process's user bytes [start, end) (its argv, its
 * environment) to dst: at most max_len - 1 of them (max_len a power of two,
 * the mask that bounds the copy for the verifier), setting truncated_flag in
 * *flags when cut.  Returns how many were copied (0 if unreadable). */
static __always_inline __u64 copy_user_area(char *dst, __u64 start, __u64 end, __u64 max_len,
					    __u16 truncated_flag, __u16 *flags)
{
	__u64 len = end > start ? end - start : 0;

	if (len > max_len - 1) {
		len = max_len - 1;
		*flags |= truncated_flag;
	}
	len &= max_len - 1;
	if (bpf_probe_read_user(dst, len, (void *)start) != 0)
		return 0;
	return len;
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
	__u64 argv_len, env_len;
	long filename_len;
	__u64 pid_tgid;
	__u32 size;
	int cni;

	__u8 *tracked = tracked_flag(tgid);
	__u8 role = comm_role();

	if (!flag_is_set(tracked)) {
		if (!(role & COMM_RUNTIME))
			return 0;
		set_flag(tracked, TRACKED);
	}
	pid_tgid = bpf_get_current_pid_tgid();
#if !TRACER_SOCKET_TRACEPOINTS
	pending_syscalls.delete(&pid_tgid);  /* the execve entry: it did not fail */
#endif
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

	argv_len = copy_user_area(event->data + filename_len, read_u64(mm, OFF_MM_ARG_START),
				  read_u64(mm, OFF_MM_ARG_END), ARGV_MAX_LEN, EXEC_FLAG_ARGV_TRUNCATED,
				  &event->flags);
	event->argv_len = argv_len;

	/* CNI plugins learn their pod from CNI_* variables.  Go shuffles the
	 * environment's order, so copy all of it (up to ENV_MAX_LEN); userspace
	 * keeps the CNI_* keys and drops the rest before storing anything. */
	env_len = 0;
	cni = has_cni_prefix(event->data);
	if (cni) {
		env_len = copy_user_area(event->data + filename_len + argv_len,
					 read_u64(mm, OFF_MM_ENV_START), read_u64(mm, OFF_MM_ENV_END),
					 ENV_MAX_LEN, EXEC_FLAG_ENV_TRUNCATED, &event->flags);
		event->flags |= EXEC_FLAG_ENV_CAPTURED;
	}
	event->env_len = env_len;

#if TRACER_SOCKET_TRACEPOINTS
	exec_settle(event, tracked, tgid);
#endif
	size = offsetof(struct exec_event, data) + filename_len + argv_len + env_len;
	if (size > sizeof(*event))
		size = sizeof(*event);
	fill_header(&event->hdr, EVENT_EXEC, size);
	submit(event, size, EVENT_EXEC);
#if TRACER_SOCKET_TRACEPOINTS
	exec_tail.call(ctx, 0);
	/* only when exec_classify is not there (not loaded yet): a worker, if it
	 * is one, is not counted, and nothing can vouch for it */
	if (role & COMM_WORKER)
		set_flag(tracked, TRACKED | TRACKED_UNVOUCHED);
	else if (cni)
		set_flag(tracked, TRACKED | TRACKED_UNVOUCHED);
#endif
	return 0;
}

/* sched_process_exit(struct task_struct *p, bool group_dead), once per thread */
RAW_TRACEPOINT_PROBE(sched_process_exit)
{
	const void *task = (const void *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u8 *tracked;
	struct exit_event event = {};

#if TRACER_SOCKET_TRACEPOINTS
	settle_unwatched((__u32)pid_tgid, tgid, 0);
#else
	take_pending((__u32)pid_tgid);  /* a syscall that never returned */
#endif
	if (!(__u8)ctx->args[1])
		return 0;  /* not the last thread of its group */
	set_cri_holder(tgid, 0);
	tracked = tracked_flag(tgid);
	if (!flag_is_set(tracked))
		return 0;
	fill_header(&event.hdr, EVENT_EXIT, sizeof(event));
	event.exit_code = read_u32(task, OFF_TASK_EXIT_CODE);
#if TRACER_SOCKET_TRACEPOINTS
	{
		struct worker *worker = workers.lookup(&tgid);
		__u32 causes = unwatched_causes(worker, *tracked);

		if (causes)
			event.flags |= EXIT_FLAG_UNWATCHED | (causes << UNWATCHED_CAUSE_SHIFT);
		if (worker)
			worker_ends(tgid);
	}
#endif
	submit(&event, sizeof(event), EVENT_EXIT);
	set_flag(tracked, 0);
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
static __always_inline void emit_exec_failed(long ret, const char *filename)
{
	union scratch_event *space;
	struct exec_failed_event *event;
	int len;

	space = scratch_space();
	if (!space)
		return;
	event = &space->exec_failed;
	fill_header(&event->hdr, EVENT_EXEC_FAILED, sizeof(*event));
	event->ret = ret;
	len = bpf_probe_read_user_str(event->filename, sizeof(event->filename), filename);
	event->filename_len = len > 0 ? len : 0;
	submit(event, sizeof(*event), EVENT_EXEC_FAILED);
}

#if !TRACER_SOCKET_TRACEPOINTS
/* The filename was kept at entry (tracer.bpf.c). */
static __always_inline void exec_failed(long ret)
{
	struct pending_syscall call;

	if (recall_syscall(&call))
		emit_exec_failed(ret, (const char *)call.args[0]);
}
#endif

#endif /* TRACER_PROCESS_H */
