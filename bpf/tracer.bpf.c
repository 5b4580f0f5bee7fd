/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process, namespace, mount and cgroup events of the container runtime's
 * process tree, and the CRI bytes on the runtime's socket, for
 * tracer/kernel/capture.py (bcc).
 *
 * Only raw tracepoints are used: many managed kernels have no kprobes and
 * refuse fentry/fexit, and a raw tracepoint detaches in a fraction of a
 * millisecond where a perf-event tracepoint takes ~70 ms (the kernel waits
 * for an RCU grace period per tracepoint).  Their arguments are the kernel's
 * own (task, cgroup, sock, pt_regs pointers), read at BTF offsets like the
 * rest.
 *
 * No cost to the node's other processes.  A program on the raw sys_enter or
 * sys_exit tracepoint puts every task on the node on the syscall slow path
 * while it is attached, whatever it does.  So (TRACER_SOCKET_TRACEPOINTS,
 * lib/common.h):
 *   - process life comes from the sched and cgroup tracepoints, which run
 *     only at fork, exec and exit and for cgroup changes;
 *   - the CRI bytes from the sock_send_length/sock_recv_length
 *     tracepoints, which only socket I/O runs (cri_tracepoints.h);
 *   - the syscalls the traces show of the runtime's workers (unshare,
 *     setns, mount, pivot_root, failed execs, cgroup file writes) from one
 *     sys_exit program below, which the armer attaches only while a worker
 *     lives (arming.h): the registers it gets hold the syscall's arguments.
 * On kernels without the socket tracepoints, the fallback: one sys_enter and
 * one sys_exit program, attached all the time, dispatched by syscall number
 * (cri_syscalls.h), as the tracer was built before.
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
 * The filters that hot paths consult (`tracked`, `cri_tgids`, and the
 * fallback's `pending_threads`, the armed program's `unwatched_threads`) are
 * arrays with one byte per process or thread id: the verifier inlines an
 * array lookup into a few instructions, where a hash lookup is a helper call
 * that hashes the key.  Each byte has one writer at a time and is written
 * whole, so no atomics are needed; userspace writes its bytes through a
 * shared mapping (BPF_F_MMAPABLE), not through a read-modify-write of a
 * whole 8-byte element.
 *
 * The programs by concern, in the headers this file includes:
 *   lib/common.h        the ring buffer, the per-id filters, the event header
 *   arming.h            the syscall program only while the runtime works
 *   process.h           sched_process_fork/exec/exit, mark_victim, failed execs
 *   namespaces.h        unshare, setns, mount, pivot_root (runc init's stages)
 *   cgroup.h            cgroup_mkdir, cgroup_attach_task, writes to cgroup files
 *   cri_socket.h        CRI connections and the bytes on them, and
 *   cri_tracepoints.h   how they are seen (or cri_syscalls.h, the fallback)
 *   syscalls.h          the syscall table of this architecture (#error if none)
 * This file holds the syscall programs that dispatch to them.
 */

#include <uapi/linux/ptrace.h>
#include "lib/common.h"
#include "process.h"
#include "namespaces.h"
#include "cgroup.h"
#include "cri_socket.h"
#include "syscalls.h"

#if TRACER_SOCKET_TRACEPOINTS
#include "arming.h"
#include "cri_tracepoints.h"

/* ---- the syscall program, attached only while the runtime works ------------ */

/* sys_exit(struct pt_regs *regs, long ret), attached by the armer (its name
 * is not a RAW_TRACEPOINT_PROBE's, so bcc does not attach it at load).
 * Every syscall exit on the node while attached: a thread born unhooked is
 * settled (one array load for every other), an untracked process leaves
 * after a second one; a tracked one's syscall is dispatched by number, with
 * its arguments from the registers it was made with and its result. */
int armed_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	const void *regs = (const void *)ctx->args[0];
	long ret = ctx->args[1];
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	long id;

	settle_unwatched((__u32)pid_tgid, tgid, regs);
	if (!is_tracked(tgid))
		return 0;
	id = read_u64(regs, OFF_PT_REGS_ORIG_AX);
	if (id != NR_WRITE && id != NR_EXECVE && id != NR_EXECVEAT && id != NR_UNSHARE && id != NR_SETNS &&
	    id != NR_MOUNT && id != NR_PIVOT_ROOT)
		return 0;
	if (in_compat_syscall())
		return 0;
	switch (id) {
	case NR_WRITE:
		/* runc writes the cgroup files: the bytes it asked to write */
		cgroup_write(read_u64(regs, OFF_PT_REGS_DI), (const char *)read_u64(regs, OFF_PT_REGS_SI),
			     read_u64(regs, OFF_PT_REGS_DX));
		break;
	case NR_EXECVE:
		if (ret < 0 && ret >= -MAX_ERRNO)
			emit_exec_failed(ret, (const char *)read_u64(regs, OFF_PT_REGS_DI));
		break;
	case NR_EXECVEAT:
		if (ret < 0 && ret >= -MAX_ERRNO)
			emit_exec_failed(ret, (const char *)read_u64(regs, OFF_PT_REGS_SI));
		break;
	case NR_UNSHARE:
		/* the self-check's unshare(0) also checks where current_regs() looks */
		if (regs != current_regs())
			count_stat(STAT_REGS_MISMATCH);
		emit_namespace(NS_SYSCALL_UNSHARE, read_u64(regs, OFF_PT_REGS_DI), -1, ret);
		break;
	case NR_SETNS:
		/* setns(fd, nstype) */
		emit_namespace(NS_SYSCALL_SETNS, read_u64(regs, OFF_PT_REGS_SI), read_u64(regs, OFF_PT_REGS_DI), ret);
		break;
	case NR_MOUNT:
		/* mount(source, target, fstype, flags, data) */
		emit_mount(ret, (const char *)read_u64(regs, OFF_PT_REGS_DI), (const char *)read_u64(regs, OFF_PT_REGS_SI),
			   (const char *)read_u64(regs, OFF_PT_REGS_DX), read_u64(regs, OFF_PT_REGS_R10));
		break;
	case NR_PIVOT_ROOT:
		emit_pivot_root(ret, (const char *)read_u64(regs, OFF_PT_REGS_DI),
				(const char *)read_u64(regs, OFF_PT_REGS_SI));
		break;
	}
	return 0;
}

#else /* the fallback: syscall programs attached all the time */
#include "cri_syscalls.h"

/* ---- the syscalls: one program at entry, one at exit ------------------------ */

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

#endif /* TRACER_SOCKET_TRACEPOINTS */
