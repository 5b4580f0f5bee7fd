/* SPDX-License-Identifier: Apache-2.0 */
/* CRI connections: unix sockets to a runtime's socket path, and the bytes
 * read and written on them.  What both designs share: the runtime sockets'
 * paths, the endpoints, their registration, and how one syscall's bytes are
 * sent.  How connections are found and their bytes seen is in
 * cri_tracepoints.h (the socket tracepoints) or cri_syscalls.h (the
 * fallback's syscall programs). */
#ifndef TRACER_CRI_SOCKET_H
#define TRACER_CRI_SOCKET_H

#include "lib/common.h"
#include "cgroup.h"

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

/* CRI connections: the runtime sockets' paths (from userspace), every
 * endpoint by socket inode.  The processes that hold one are in `cri_tgids`
 * (lib/common.h). */
BPF_HASH(cri_paths, struct socket_path_key, __u8, 16);
BPF_HASH(cri_endpoints, __u64, struct socket_endpoint, 16384);
/* Per endpoint inode: the directions (bit 1 out, bit 2 in) whose bytes the
 * ring buffer could not take, or that no program could read; the next
 * record of that direction carries SOCKET_FLAG_GAP_BEFORE, so that the
 * decoder knows where bytes are missing. */
BPF_TABLE("lru_hash", __u64, __u8, cri_gaps, 16384);

/* ---- CRI sockets ---------------------------------------------------------- */

/* A socket's inode number (struct socket_alloc { struct socket socket;
 * struct inode vfs_inode; }), 0 without a struct socket. */
static __always_inline __u64 socket_inode_number(const void *socket)
{
	if (!socket)
		return 0;
	return read_u64((const char *)socket + OFF_SOCKET_ALLOC_VFS_INODE, OFF_INODE_I_INO);
}

/* The inode of the socket at the other end of a unix stream, or 0 while
 * that end has not been accepted yet (it has no struct socket then). */
static __always_inline __u64 peer_inode_number(const void *file)
{
	const void *socket = read_ptr(file, OFF_FILE_PRIVATE_DATA);
	const void *sk = read_ptr(socket, OFF_SOCKET_SK);
	const void *peer = read_ptr(sk, OFF_UNIX_SOCK_PEER);

	return socket_inode_number(read_ptr(peer, OFF_SOCK_SK_SOCKET));
}

static __always_inline void register_endpoint(__u64 inode, __u64 peer_inode, __u32 fd, __u8 side,
					      const struct socket_path_key *path)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	union scratch_event *space;
	struct socket_open_event *event;
	struct socket_endpoint endpoint = {};
	struct socket_endpoint *peer;

	endpoint.inode = inode;
	endpoint.peer_inode = peer_inode;
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

/* An endpoint is gone: out of the maps, and a SOCKET_CLOSE for userspace. */
static __always_inline void close_endpoint(__u64 inode)
{
	struct socket_endpoint *endpoint = cri_endpoints.lookup(&inode);
	struct socket_close_event event = {};

	if (!endpoint)
		return;
	event.endpoint = *endpoint;
	cri_endpoints.delete(&inode);
	cri_gaps.delete(&inode);
	fill_header(&event.hdr, EVENT_SOCKET_CLOSE, sizeof(event));
	submit(&event, sizeof(event), EVENT_SOCKET_CLOSE);
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

/* Sends the bytes one syscall moved on an endpoint: `total` bytes from
 * `buffer` (an iovec array of `count` entries when `vectored`, a constant at
 * each call site), stamped `ktime_ns`, with the endpoint's gap bookkeeping. */
static __always_inline void send_bytes(const struct socket_endpoint *found, __u64 ktime_ns, __u8 direction,
				       __u16 syscall, __u64 buffer, __u64 count, __u32 total, const int vectored)
{
	union scratch_event *space = scratch_space();
	struct socket_data_event *event;
	__u64 inode = found->inode;
	__u32 sent = 0, lost = 0;
	__u8 *gap, gap_bits = 0, bit;

	if (!space)
		return;
	event = &space->socket_data;
	fill_header(&event->hdr, EVENT_SOCKET_DATA, 0);
	event->hdr.ktime_ns = ktime_ns;
	event->endpoint = *found;
	event->syscall_bytes = total;
	event->direction = direction;
	event->flags = 0;
	event->syscall = syscall;
	bit = direction == SOCKET_DIRECTION_OUT ? 1 : 2;
	gap = cri_gaps.lookup(&inode);
	if (gap)
		gap_bits = *gap;
	if (gap_bits & bit)
		event->flags = SOCKET_FLAG_GAP_BEFORE;

	if (!vectored)
		sent = emit_segments(event, buffer, total, 0, SOCKET_MAX_SEGMENTS, &lost);
	else
		sent = emit_gathered(event, buffer, count, total, &lost);
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

/* Bytes of a direction that moved and could not be read: the next record
 * of that direction says a gap comes before it. */
static __always_inline void mark_gap(__u64 inode, __u8 direction)
{
	__u8 *gap = cri_gaps.lookup(&inode);
	__u8 bits = gap ? *gap : 0;

	bits |= direction == SOCKET_DIRECTION_OUT ? 1 : 2;
	cri_gaps.update(&inode, &bits);
}

#endif /* TRACER_CRI_SOCKET_H */
