/* SPDX-License-Identifier: Apache-2.0 */
/* CRI connections: unix sockets to a runtime's socket path, found at
 * connect and accept (or seeded from sock_diag), and the bytes read and
 * written on them. */
#ifndef TRACER_CRI_SOCKET_H
#define TRACER_CRI_SOCKET_H

#include "lib/common.h"

#ifndef SOCKET_MAX_SEGMENTS
#define SOCKET_MAX_SEGMENTS 8       /* per syscall: 8 segments of up to 8 KiB - 1 */
#endif
#define SOCKET_MAX_IOV 64
#define SOCKET_GATHER_LEN (SOCKET_SEGMENT_LEN - 1)  /* a mask: offsets and lengths below 8 KiB */
#define AF_UNIX_FAMILY 1
#define EINPROGRESS_ERRNO 115
#define S_IFMT_BITS 0170000
#define S_IFSOCK_BITS 0140000

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

/* CRI connections: the runtime sockets' paths (from userspace), every
 * endpoint by socket inode.  The processes that hold one are in `cri_tgids`
 * (lib/common.h), so that other processes' reads and writes cost one array load. */
BPF_HASH(cri_paths, struct socket_path_key, __u8, 16);
BPF_HASH(cri_endpoints, __u64, struct socket_endpoint, 16384);
BPF_TABLE("lru_hash", __u64, struct pending_io, pending_ios, 16384);
/* Per endpoint inode: the directions (bit 1 out, bit 2 in) whose bytes the
 * ring buffer could not take; the next record of that direction carries
 * SOCKET_FLAG_GAP_BEFORE, so that the decoder knows where bytes are missing. */
BPF_TABLE("lru_hash", __u64, __u8, cri_gaps, 16384);
BPF_TABLE("lru_hash", __u64, struct socket_path_key, pending_connects, 1024);

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

#endif /* TRACER_CRI_SOCKET_H */
