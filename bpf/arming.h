/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The syscall program only while the runtime works.
 *
 * A program on the raw sys_exit tracepoint puts every task on the node on
 * the syscall slow path for as long as it is attached, whatever it does.  So
 * it is attached only while a runtime worker lives: a runc, a CNI plugin,
 * and what they fork (runc init's stages, a plugin's delegate).  Those are
 * the processes whose syscalls the traces show (namespaces, mounts, cgroup
 * writes, failed execs).  The kernel side tells the armer
 * (tracer/kernel/armer.py, a process of its own) when one is born, through
 * the `arm_requests` ring buffer, and ahead of them when a shim starts or a
 * pod-changing CRI request comes (cri_tracepoints.h); the armer attaches the
 * program (about a tenth of a millisecond) and detaches it 100 ms after the
 * last worker ends or the last request comes.
 *
 * A worker born while the program is detached runs unhooked until the armer
 * has attached it.  Whether it missed anything is told, per thread, by what
 * such syscalls leave behind: a setns or unshare replaces the task's
 * nsproxy, a mount or pivot_root bumps its mount namespace's event count, a
 * write (a cgroup file; also how a failed exec is reported) bumps its count
 * of write syscalls.  (A CNI plugin is not judged by its mount namespace's
 * count: the standard plugins mount nothing, and containerd mounts every
 * sandbox's network namespace in that same host namespace meanwhile.)  Right after attaching, the armer runs a task iterator
 * (bpf_iter__task below) that compares those, for every thread born
 * unhooked, with what they were at its birth (a thread that exec'd or
 * exited before is compared then): unchanged, nothing was missed; changed,
 * its process is marked late, and its EXEC or EXIT event says so
 * (EXEC_FLAG_UNWATCHED, EXIT_FLAG_UNWATCHED): userspace marks its start
 * partial.  A worker that lived through a detach (the armer detaches a
 * stuck one after a while) is marked by the epoch it was born in.
 */
#ifndef TRACER_ARMING_H
#define TRACER_ARMING_H

#include "lib/common.h"
#include "hook_state.h"
#include "syscalls.h"

#define WORKERS_MAX 16384

/* A runtime worker process, from its birth (exec or fork) to its exit or
 * an exec into something else. */
struct worker {
	__u64 birth_ns;
	__u64 epoch;          /* hooks.epoch at birth */
	__u8 late;            /* UNWATCHED_*: a thread of it ran unhooked and may have made syscalls not seen */
	__u8 cni;             /* a CNI plugin (or what it forked): not judged by its mount namespace */
	__u8 _pad[6];
};

/* What a thread born unhooked had done, at its birth. */
struct thread_baseline {
	__u64 nsproxy;
	__u64 mnt_event;
	__u64 syscw;
	__u32 tgid;
	__u8 mounts_count;    /* judge it by its mount namespace's mounts too */
	__u8 _pad[3];
};

BPF_F_TABLE("array", __u32, struct hook_state, hooks, 1, BPF_F_MMAPABLE);
BPF_RINGBUF_OUTPUT(arm_requests, 1);
BPF_HASH(workers, __u32, struct worker, WORKERS_MAX);
/* Threads born while the syscall program was detached, one byte per thread
 * id (the armed sys_exit consults it for every syscall), and what they had
 * done then. */
BPF_ARRAY(unwatched_threads, struct flags8, ID_SLOTS);
BPF_TABLE("lru_hash", __u32, struct thread_baseline, thread_baselines, 16384);

static __always_inline struct hook_state *hook_state(void)
{
	int zero = 0;
	return hooks.lookup(&zero);
}

static __always_inline int hooks_armed(void)
{
	struct hook_state *state = hook_state();
	return state && state->armed;
}

/* Asks the armer for the syscall program (a wake-up only while detached). */
static __always_inline void request_hooks(void)
{
	struct hook_state *state = hook_state();
	__u64 now = bpf_ktime_get_ns();

	if (!state)
		return;
	state->last_request_ns = now;
	if (state->armed)
		return;
	__sync_fetch_and_add(&state->requests, 1);
	arm_requests.ringbuf_output(&now, sizeof(now), BPF_RB_FORCE_WAKEUP);
}

static __always_inline __u8 *unwatched_flag(__u32 pid)
{
	__u32 slot = pid / 8;
	return id_flag(unwatched_threads.lookup(&slot), pid);
}

/* What a thread has done that the syscall program would have shown. */
static __always_inline void thread_state(const void *task, struct thread_baseline *state)
{
	const void *nsproxy = read_ptr(task, OFF_TASK_NSPROXY);

	state->nsproxy = (__u64)nsproxy;
#if OFF_MNT_NS_EVENT >= 0
	state->mnt_event = read_u64(read_ptr(nsproxy, OFF_NSPROXY_MNT_NS), OFF_MNT_NS_EVENT);
#endif
#if OFF_TASK_IOAC_SYSCW >= 0
	state->syscw = read_u64(task, OFF_TASK_IOAC_SYSCW);
#endif
}

static __always_inline void mark_unwatched(const void *task, __u32 pid, __u32 tgid, int cni)
{
	struct thread_baseline baseline = {};

	thread_state(task, &baseline);
	baseline.tgid = tgid;
	baseline.mounts_count = !cni;
	thread_baselines.update(&pid, &baseline);
	set_flag(unwatched_flag(pid), 1);
}

static __always_inline void mark_late(__u32 tgid, __u8 causes)
{
	struct worker *worker = workers.lookup(&tgid);

	if (worker)
		worker->late |= causes;
}

/* Whether a thread born unhooked did anything the syscall program would
 * have shown since its birth (see the top), now that it is seen again;
 * `task` is the thread, `pid` its id (or the id it had before an exec).
 * `own_write` is 1 at the exit of a write, which the program itself sees:
 * the count of write syscalls it may have added is no miss (0 elsewhere). */
static __always_inline void settle_task(const void *task, __u32 pid, __u32 tgid, int own_write)
{
	__u8 *flag = unwatched_flag(pid);
	struct thread_baseline *baseline, now = {};
	int cause = -1;

	if (!flag_is_set(flag))
		return;
	*flag = 0;
	baseline = thread_baselines.lookup(&pid);
	if (!baseline) {
		count_stat(STAT_LATE_UNKNOWN);
		mark_late(tgid, UNWATCHED_UNKNOWN);  /* evicted: cannot tell */
		return;
	}
	thread_state(task, &now);
#if OFF_MNT_NS_EVENT < 0 || OFF_TASK_IOAC_SYSCW < 0
	cause = STAT_LATE_UNKNOWN;  /* this kernel keeps no such traces: assume the worst */
#else
	if (now.nsproxy != baseline->nsproxy)
		cause = STAT_LATE_NAMESPACES;
	else if (now.syscw - baseline->syscw > (__u64)own_write)
		cause = STAT_LATE_WRITES;
	else if (baseline->mounts_count && now.mnt_event != baseline->mnt_event)
		cause = STAT_LATE_MOUNTS;
#endif
	if (cause >= 0) {
		count_stat(cause);
		/* STAT_LATE_NAMESPACES..UNKNOWN are UNWATCHED_NAMESPACES..UNKNOWN's bits */
		mark_late(baseline->tgid, 1 << (cause - STAT_LATE_NAMESPACES));
	}
	thread_baselines.delete(&pid);
}

/* The same, for the current thread at a syscall's exit (`regs`, the
 * registers it was made with), its exec or its exit (`regs` NULL). */
static __always_inline void settle_unwatched(__u32 pid, __u32 tgid, const void *regs)
{
	__u8 *flag = unwatched_flag(pid);

	if (flag_is_set(flag))
		settle_task((const void *)bpf_get_current_task(), pid, tgid,
			    regs && read_u64(regs, OFF_PT_REGS_ORIG_AX) == NR_WRITE);
}

/* The task iterator the armer runs right after attaching (bpf/arming.h's
 * top): every thread born unhooked is settled at that moment, not at its
 * own first syscall exit, which an idle thread may make much later, after
 * others' mounts have moved its mount namespace's count.  bcc loads a
 * function named bpf_iter__task as the iterator of that name. */
struct bpf_iter_meta;
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

int bpf_iter__task(struct bpf_iter__task *ctx)
{
	const void *task = ctx->task;

	if (!task)
		return 0;
	settle_task(task, read_u32(task, OFF_TASK_PID), read_u32(task, OFF_TASK_TGID), 0);
	return 0;
}

/* A worker's lateness, as UNWATCHED_* causes, when it stops being one
 * (exec into something else, exit): late, or alive across a detach. */
static __always_inline __u32 worker_unwatched_causes(const struct worker *worker)
{
	struct hook_state *state = hook_state();

	return worker->late | (state && state->epoch != worker->epoch ? UNWATCHED_DETACHED : 0);
}

static __always_inline void worker_ends(__u32 tgid)
{
	struct hook_state *state = hook_state();

	if (workers.delete(&tgid) != 0 || !state)
		return;
	/* the armer detaches once none is left: tell it now, not at its next timer */
	if (__sync_fetch_and_add(&state->workers, -1) == 1)
		arm_requests.ringbuf_output(&tgid, sizeof(tgid), BPF_RB_FORCE_WAKEUP);
}

/* A worker is born (by exec, or fork of a worker): counted, and if the
 * syscall program is detached, its thread is marked and the armer woken.
 * An exec of a worker by a worker starts it afresh.  Returns 0 if the map
 * had no room (the caller flags the event: nothing can vouch for it). */
static __always_inline int worker_born(const void *task, __u32 pid, __u32 tgid, int cni)
{
	struct hook_state *state = hook_state();
	struct worker fresh = { .birth_ns = bpf_ktime_get_ns(), .cni = cni != 0 };
	struct worker *existing;

	if (!state)
		return 0;
	fresh.epoch = state->epoch;
	existing = workers.lookup(&tgid);
	if (existing) {
		*existing = fresh;
	} else if (workers.insert(&tgid, &fresh) == 0) {
		__sync_fetch_and_add(&state->workers, 1);
	} else {
		count_stat(STAT_WORKERS_FULL);
		return 0;
	}
	if (!state->armed) {
		mark_unwatched(task, pid, tgid, cni);
		request_hooks();
	}
	return 1;
}

/* A thread of a worker, born while detached: watched from its birth. */
static __always_inline void worker_thread_born(const void *task, __u32 pid, __u32 tgid)
{
	struct worker *worker;

	if (hooks_armed())
		return;
	worker = workers.lookup(&tgid);
	if (worker)
		mark_unwatched(task, pid, tgid, worker->cni);
}

#endif /* TRACER_ARMING_H */
