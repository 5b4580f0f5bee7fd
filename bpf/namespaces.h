/* SPDX-License-Identifier: Apache-2.0 */
/* Namespace and mount changes of tracked processes (runc init's stages),
 * at the exit of unshare, setns, mount and pivot_root, with the arguments
 * the call was made with (from its registers, or kept from its entry). */
#ifndef TRACER_NAMESPACES_H
#define TRACER_NAMESPACES_H

#include "lib/common.h"

/* ---- namespaces --------------------------------------------------------- */

/* unshare(flags) or setns(fd, nstype): `flags` is unshare's flags or
 * setns's nstype. */
static __always_inline void emit_namespace(__u32 syscall, __u64 flags, __s32 fd, long ret)
{
	struct namespace_event event = {};

	fill_header(&event.hdr, EVENT_NAMESPACE, sizeof(event));
	event.syscall = syscall;
	event.flags = flags;
	event.fd = syscall == NS_SYSCALL_SETNS ? fd : -1;
	event.ret = ret;
	submit(&event, sizeof(event), EVENT_NAMESPACE);
}

/* ---- mounts ------------------------------------------------------------- */

/* mount(source, target, fstype, flags, data) */
static __always_inline void emit_mount(long ret, const char *source, const char *target, const char *fstype,
				       __u64 flags)
{
	union scratch_event *space = scratch_space();
	struct mount_event *event;

	if (!space)
		return;
	event = &space->mount;
	/* The scratch space holds the previous event's bytes (an environment,
	 * say): clear it, since this event is sent whole. */
	__builtin_memset(event, 0, sizeof(*event));
	event->ret = ret;
	event->flags = flags;
	bpf_probe_read_user_str(event->source, sizeof(event->source), source);
	bpf_probe_read_user_str(event->target, sizeof(event->target), target);
	bpf_probe_read_user_str(event->fstype, sizeof(event->fstype), fstype);
	fill_header(&event->hdr, EVENT_MOUNT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_MOUNT);
}

static __always_inline void emit_pivot_root(long ret, const char *new_root, const char *put_old)
{
	union scratch_event *space = scratch_space();
	struct pivot_root_event *event;

	if (!space)
		return;
	event = &space->pivot_root;
	__builtin_memset(event, 0, sizeof(*event));
	event->ret = ret;
	bpf_probe_read_user_str(event->new_root, sizeof(event->new_root), new_root);
	bpf_probe_read_user_str(event->put_old, sizeof(event->put_old), put_old);
	fill_header(&event->hdr, EVENT_PIVOT_ROOT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_PIVOT_ROOT);
}

#if !TRACER_SOCKET_TRACEPOINTS
/* The fallback's exits: the arguments were kept at entry (tracer.bpf.c). */
static __always_inline void exit_namespace(__u32 syscall, long ret)
{
	struct pending_syscall call;

	if (recall_syscall(&call))
		emit_namespace(syscall, call.args[0], (__s32)call.args[1], ret);
}

static __always_inline void exit_mount(long ret)
{
	struct pending_syscall call;

	if (recall_syscall(&call))
		emit_mount(ret, (const char *)call.args[0], (const char *)call.args[1], (const char *)call.args[2],
			   call.args[3]);
}

static __always_inline void exit_pivot_root(long ret)
{
	struct pending_syscall call;

	if (recall_syscall(&call))
		emit_pivot_root(ret, (const char *)call.args[0], (const char *)call.args[1]);
}
#endif

#endif /* TRACER_NAMESPACES_H */
