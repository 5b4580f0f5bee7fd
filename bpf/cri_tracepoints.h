/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRI bytes without syscall programs: the sock:sock_send_length and
 * sock:sock_recv_length raw tracepoints run inside every socket send and
 * receive (and nothing else: a process that does no socket I/O never runs
 * them, and the syscall fast path stays untouched), after the bytes moved,
 * with the struct sock and the byte count.  What the syscall was asked for
 * (its fd, the user buffer or iovec array) is in the registers it entered
 * the kernel with (current_regs()).
 *
 * A socket that is not AF_UNIX leaves after one read.  A process holding a
 * CRI connection (`cri_tgids`) has its socket looked up among the endpoints;
 * anyone's stream socket that is not one may be a new connection: it is, if
 * it is bound to a runtime socket's path (the runtime's accepted end shares
 * its listener's address) or its peer is (a client's end, from its first
 * byte, before the runtime has accepted it).  A read that finds the end of
 * the stream (0 bytes, or ECONNRESET) ends the connection: both endpoints
 * go (SOCKET_CLOSE), since no close(2) is seen.
 *
 * Times: a read's bytes are stamped when it returns, as before; a write's
 * now when it has queued them, no longer when it began (see
 * tracer/spans/build.py for how a CLIENT span still holds its SERVER span).
 */
#ifndef TRACER_CRI_TRACEPOINTS_H
#define TRACER_CRI_TRACEPOINTS_H

#include "arming.h"
#include "cri_socket.h"
#include "syscalls.h"

#define SOCK_STREAM_TYPE 1
#define MSG_PEEK_FLAG 2
#define ECONNRESET_ERRNO 104

/* What the syscall moving the bytes was asked for: the fd, and the buffer
 * (or iovec array and count) that now holds them.  0 if the bytes moved
 * through something else (splice, io_uring, sendmmsg): they cannot be read. */
struct socket_syscall {
	__u64 buffer;
	__u64 count;
	__u32 fd;
	__u16 nr;
	__u8 vectored;
};

static __always_inline int socket_syscall(struct socket_syscall *call)
{
	const void *regs = current_regs();
	__u64 nr = read_u64(regs, OFF_PT_REGS_ORIG_AX);
	__u64 iov[2] = {};

	if (in_kernel_thread() || in_compat_syscall())
		return 0;
	call->nr = nr;
	call->fd = read_u64(regs, OFF_PT_REGS_DI);
	call->buffer = read_u64(regs, OFF_PT_REGS_SI);
	call->count = read_u64(regs, OFF_PT_REGS_DX);
	switch (nr) {
	case NR_READ:
	case NR_WRITE:
	case NR_SENDTO:
	case NR_RECVFROM:
		call->vectored = 0;
		return 1;
	case NR_READV:
	case NR_WRITEV:
		call->vectored = 1;
		return 1;
	case NR_SENDMSG:
	case NR_RECVMSG:
		/* struct user_msghdr: msg_iov at byte 16, msg_iovlen at byte 24 */
		if (bpf_probe_read_user(iov, sizeof(iov), (const char *)call->buffer + 16) != 0)
			return 0;
		call->buffer = iov[0];
		call->count = iov[1];
		call->vectored = 1;
		return 1;
	}
	return 0;
}

/* A stream socket that is not an endpoint, with bytes moving: a new CRI
 * connection if it, or its peer, is bound to a runtime socket's path.  Most
 * unix sockets are bound to nothing at either end (socketpairs), or are
 * datagrams (logging): those leave after a few reads. */
static __always_inline struct socket_endpoint *discover(const void *sk)
{
	struct socket_path_key key = {};
	struct socket_syscall call = {};
	const void *peer;
	__u64 inode;
	__u8 side;

	if (read_u16(sk, OFF_SOCK_TYPE) != SOCK_STREAM_TYPE)
		return 0;
	peer = read_ptr(sk, OFF_UNIX_SOCK_PEER);
	if (!read_ptr(sk, OFF_UNIX_SOCK_ADDR) && !read_ptr(peer, OFF_UNIX_SOCK_ADDR))
		return 0;
	if (bound_to_cri_path(sk, &key))
		side = SOCKET_SIDE_SERVER;      /* the runtime's accepted end */
	else if (bound_to_cri_path(peer, &key))
		side = SOCKET_SIDE_CLIENT;      /* connected to the runtime's socket */
	else
		return 0;
	inode = socket_inode_number(read_ptr(sk, OFF_SOCK_SK_SOCKET));
	if (!inode)
		return 0;
	register_endpoint(inode, socket_inode_number(read_ptr(peer, OFF_SOCK_SK_SOCKET)),
			  socket_syscall(&call) ? call.fd : 0, side, &key);
	return cri_endpoints.lookup(&inode);
}

/* A CRI request this large (a client's write, the runtime's read of it)
 * asks for the syscall program ahead of the workers it causes: a
 * RunPodSandbox (~560 bytes from a real kubelet) comes ~10 ms before its
 * first CNI plugin, a CreateContainer (~1.6 KiB) ~25 ms before its runc, a
 * margin that covers any attach, even one that waits for an RCU grace
 * period.  A real kubelet's other requests (its polls, status and stop
 * calls, StartContainer) stay below 300 bytes: they never ask
 * (tests/fixtures/kubelet-wire.rec; docs/performance.md). */
#define ARM_REQUEST_BYTES 400

static __always_inline void socket_io(const void *sk, int ret, int flags, const __u8 direction)
{
	struct socket_syscall call = {};
	struct socket_endpoint *found = 0;
	__u64 inode, peer_inode;
	int known;

	if (read_u16(sk, OFF_SOCK_FAMILY) != AF_UNIX_FAMILY)
		return;  /* every other socket's I/O ends here */
	if (holds_cri_socket(bpf_get_current_pid_tgid() >> 32)) {
		inode = socket_inode_number(read_ptr(sk, OFF_SOCK_SK_SOCKET));
		found = cri_endpoints.lookup(&inode);
	}
	if (!found) {
		if (ret <= 0)
			return;  /* nothing moved: no new connection is found by it */
		found = discover(sk);
		if (!found)
			return;
	}
	inode = found->inode;
	peer_inode = found->peer_inode;
	known = socket_syscall(&call);
	if (direction == SOCKET_DIRECTION_IN && (ret == 0 || ret == -ECONNRESET_ERRNO)) {
		/* the end of the stream: the peer is gone (a read of nothing asked
		 * for also returns 0, but no CRI client or runtime asks for nothing) */
		if (ret == 0 && known && !call.vectored && call.count == 0)
			return;
		close_endpoint(peer_inode);
		close_endpoint(inode);
		return;
	}
	if (ret <= 0 || (direction == SOCKET_DIRECTION_IN && (flags & MSG_PEEK_FLAG)))
		return;
	if (ret >= ARM_REQUEST_BYTES && (direction == SOCKET_DIRECTION_OUT) == (found->side == SOCKET_SIDE_CLIENT))
		request_hooks();  /* a request of a size only pod-changing calls have: its workers follow */
	if (!known) {
		count_stat(STAT_SOCKET_IO_UNREADABLE);
		mark_gap(inode, direction);
		return;
	}
	if (call.vectored)
		send_bytes(found, bpf_ktime_get_ns(), direction, call.nr, call.buffer, call.count, ret, 1);
	else
		send_bytes(found, bpf_ktime_get_ns(), direction, call.nr, call.buffer, call.count, ret, 0);
}

/* sock_send_length(struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_send_length)
{
	socket_io((const void *)ctx->args[0], (int)ctx->args[1], 0, SOCKET_DIRECTION_OUT);
	return 0;
}

/* sock_recv_length(struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
	socket_io((const void *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2], SOCKET_DIRECTION_IN);
	return 0;
}

#endif /* TRACER_CRI_TRACEPOINTS_H */
