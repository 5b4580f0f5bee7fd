/* SPDX-License-Identifier: Apache-2.0 */
/* Namespace and mount changes of tracked processes (runc init's stages),
 * at the exit of unshare, setns, mount and pivot_root. */
#ifndef TRACER_NAMESPACES_H
#define TRACER_NAMESPACES_H

#include "lib/common.h"

/* ---- namespaces --------------------------------------------------------- */

/* At unshare(2) or setns(2) exit; the arguments were kept at entry. */
static __always_inline void exit_namespace(__u32 syscall, long ret)
{
	struct pending_syscall call;
	struct namespace_event event = {};

	if (!recall_syscall(&call))
		return;
	fill_header(&event.hdr, EVENT_NAMESPACE, sizeof(event));
	event.syscall = syscall;
	event.flags = call.args[0];
	event.fd = syscall == NS_SYSCALL_SETNS ? (__s32)call.args[1] : -1;
	event.ret = ret;
	submit(&event, sizeof(event), EVENT_NAMESPACE);
}

/* ---- mounts ------------------------------------------------------------- */

static __always_inline void exit_mount(long ret)
{
	struct pending_syscall call;
	union scratch_event *space;
	struct mount_event *event;

	if (!recall_syscall(&call))
		return;
	space = scratch_space();
	if (!space)
		return;
	event = &space->mount;
	/* The scratch space holds the previous event's bytes (an environment,
	 * say): clear it, since this event is sent whole. */
	__builtin_memset(event, 0, sizeof(*event));
	event->ret = ret;
	event->flags = call.args[3];
	bpf_probe_read_user_str(event->source, sizeof(event->source), (void *)call.args[0]);
	bpf_probe_read_user_str(event->target, sizeof(event->target), (void *)call.args[1]);
	bpf_probe_read_user_str(event->fstype, sizeof(event->fstype), (void *)call.args[2]);
	fill_header(&event->hdr, EVENT_MOUNT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_MOUNT);
}

static __always_inline void exit_pivot_root(long ret)
{
	struct pending_syscall call;
	union scratch_event *space;
	struct pivot_root_event *event;

	if (!recall_syscall(&call))
		return;
	space = scratch_space();
	if (!space)
		return;
	event = &space->pivot_root;
	__builtin_memset(event, 0, sizeof(*event));
	event->ret = ret;
	bpf_probe_read_user_str(event->new_root, sizeof(event->new_root), (void *)call.args[0]);
	bpf_probe_read_user_str(event->put_old, sizeof(event->put_old), (void *)call.args[1]);
	fill_header(&event->hdr, EVENT_PIVOT_ROOT, sizeof(*event));
	submit(event, sizeof(*event), EVENT_PIVOT_ROOT);
}

#endif /* TRACER_NAMESPACES_H */
