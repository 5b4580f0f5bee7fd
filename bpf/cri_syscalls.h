/* SPDX-License-Identifier: Apache-2.0 */
/* The fallback's CRI capture (kernels without the sock_send_length and
 * sock_recv_length tracepoints): connections found at connect(2) and
 * accept(2), their bytes at the entry and exit of every read and write, and
 * their end at close(2), by the always-attached sys_enter and sys_exit
 * programs (tracer.bpf.c). */
#ifndef TRACER_CRI_SYSCALLS_H
#define TRACER_CRI_SYSCALLS_H

#include "cri_socket.h"

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

BPF_TABLE("lru_hash", __u64, struct pending_io, pending_ios, 16384);
BPF_TABLE("lru_hash", __u64, struct socket_path_key, pending_connects, 1024);

static __always_inline void register_file_endpoint(__u32 fd, __u8 side, const struct socket_path_key *path)
{
	const void *file = fd_file(fd);

	if (file)
		register_endpoint(file_inode_number(file), peer_inode_number(file), fd, side, path);
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
			register_file_endpoint(call.args[0], SOCKET_SIDE_CLIENT, key);
		} else if (ret == 0 && (file = fd_file(call.args[0])) != 0) {
			/* connected: our peer is the runtime's new end, bound as its listener is */
			sk = read_ptr(read_ptr(file, OFF_FILE_PRIVATE_DATA), OFF_SOCKET_SK);
			if (bound_to_cri_path(read_ptr(sk, OFF_UNIX_SOCK_PEER), &peer_key))
				register_file_endpoint(call.args[0], SOCKET_SIDE_CLIENT, &peer_key);
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
		register_file_endpoint((__u32)ret, SOCKET_SIDE_SERVER, 0);
}

/* close(2) entry by a process holding a CRI connection. */
static __always_inline void enter_close(const void *regs)
{
	const void *file = fd_file((__u32)read_u64(regs, OFF_PT_REGS_DI));

	if (file)
		close_endpoint(file_inode_number(file));
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

/* Copies the bytes a read or write moved, at its exit.  `vectored` is a
 * constant at each call site, so each program carries only the path it needs. */
static __always_inline void emit_io(long ret, const int vectored)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending_io *pending = pending_ios.lookup(&pid_tgid);
	struct pending_io io;
	struct socket_endpoint *found;
	const void *file;
	__u64 inode, ktime_ns;

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
	if (!found)
		return;
	/* Written bytes are the peer's to read from the moment the write
	 * begins, read bytes are ours when the read returns: time each so, and
	 * a reply never seems to arrive before it was sent. */
	ktime_ns = io.direction == SOCKET_DIRECTION_OUT ? io.entry_ns : bpf_ktime_get_ns();
	send_bytes(found, ktime_ns, io.direction, io.syscall, io.buffer, io.count, ret, vectored);
}

/* struct user_msghdr: msg_iov at byte 16, msg_iovlen at byte 24 */
static __always_inline void remember_msg(__u32 fd, const void *msg, __u8 direction, __u16 syscall)
{
	__u64 iov[2] = {};

	if (bpf_probe_read_user(iov, sizeof(iov), (const char *)msg + 16) != 0)
		return;
	remember_io(fd, iov[0], iov[1], 1, direction, syscall);
}

#endif /* TRACER_CRI_SYSCALLS_H */
