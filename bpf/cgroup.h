/* SPDX-License-Identifier: Apache-2.0 */
/* cgroups: directories made and tasks attached (raw tracepoints), and
 * runc's writes of limits and of cgroup.procs. */
#ifndef TRACER_CGROUP_H
#define TRACER_CGROUP_H

#include "lib/common.h"

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270

/* ---- cgroups ------------------------------------------------------------ */

static __always_inline void emit_cgroup(__u16 type, int hierarchy, int level, __u64 id,
					__u32 target_pid, const char *path)
{
	union scratch_event *space = scratch_space();
	struct cgroup_event *event;
	long path_len;

	if (!space)
		return;
	event = &space->cgroup;
	__builtin_memset(event, 0, sizeof(*event));
	event->hierarchy = hierarchy;
	event->level = level;
	event->cgroup_id = id;
	event->target_pid = target_pid;
	path_len = bpf_probe_read_kernel_str(event->path, sizeof(event->path), path);
	event->path_len = path_len > 0 ? path_len : 0;
	fill_header(&event->hdr, type, sizeof(*event));
	submit(event, sizeof(*event), type);
}

/* What the cgroup trace events report of a struct cgroup: its hierarchy's
 * id, its level and its id (cgroup_id(): the kernfs node's id). */
static __always_inline void emit_cgroup_of(__u16 type, const void *cgroup, const char *path, __u32 target_pid)
{
	const void *root = read_ptr(cgroup, OFF_CGROUP_ROOT);

	emit_cgroup(type, (int)read_u32(root, OFF_CGROUP_ROOT_HIERARCHY_ID), (int)read_u32(cgroup, OFF_CGROUP_LEVEL),
		    read_u64(read_ptr(cgroup, OFF_CGROUP_KN), OFF_KERNFS_NODE_ID), target_pid, path);
}

/* cgroup_mkdir(struct cgroup *cgrp, const char *path) */
RAW_TRACEPOINT_PROBE(cgroup_mkdir)
{
	if (!is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_cgroup_of(EVENT_CGROUP_MKDIR, (const void *)ctx->args[0], (const char *)ctx->args[1], 0);
	return 0;
}

/* cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct task_struct *task, bool threadgroup) */
RAW_TRACEPOINT_PROBE(cgroup_attach_task)
{
	if (!is_tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_cgroup_of(EVENT_CGROUP_ATTACH, (const void *)ctx->args[0], (const char *)ctx->args[1],
		       read_u32((const void *)ctx->args[2], OFF_TASK_PID));
	return 0;
}

static __always_inline const void *fd_file(__u32 fd)
{
	const void *task = (const void *)bpf_get_current_task();
	const void *files = read_ptr(task, OFF_TASK_FILES);
	const void *fdt = read_ptr(files, OFF_FILES_FDT);
	const void *fd_array;

	if (fd >= read_u32(fdt, OFF_FDTABLE_MAX_FDS))
		return 0;
	fd_array = read_ptr(fdt, OFF_FDTABLE_FD);
	return read_ptr(fd_array, fd * sizeof(void *));
}

static __always_inline __u64 file_inode_number(const void *file)
{
	return read_u64(read_ptr(file, OFF_FILE_F_INODE), OFF_INODE_I_INO);
}

/* Writes of limits and of cgroup.procs: the file is recognised by its
 * filesystem's magic, reached through the fd table, because runc opens
 * cgroup files relative to a directory fd (openat2), so no path is seen. */
static __always_inline void cgroup_write(__u32 fd, const char *buf, __u64 count)
{
	const void *file, *inode, *sb, *dentry;
	union scratch_event *space;
	struct cgroup_write_event *event;
	__u64 magic, data_len;

	file = fd_file(fd);
	inode = read_ptr(file, OFF_FILE_F_INODE);
	sb = read_ptr(inode, OFF_INODE_I_SB);
	magic = read_u64(sb, OFF_SUPER_BLOCK_S_MAGIC);
	if (magic != CGROUP_SUPER_MAGIC && magic != CGROUP2_SUPER_MAGIC)
		return;

	space = scratch_space();
	if (!space)
		return;
	event = &space->cgroup_write;
	__builtin_memset(event, 0, sizeof(*event));
	event->fs_magic = magic;
	event->count = count;
	event->fd = fd;
	dentry = read_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
#pragma unroll
	for (int depth = 0; depth < CGROUP_NAME_DEPTH; depth++) {
		const char *name = read_ptr(dentry, OFF_DENTRY_D_NAME + OFF_QSTR_NAME);

		if (name)
			bpf_probe_read_kernel_str(event->names + depth * CGROUP_NAME_LEN, CGROUP_NAME_LEN, name);
		dentry = read_ptr(dentry, OFF_DENTRY_D_PARENT);
	}
	data_len = count;
	if (data_len > CGROUP_WRITE_DATA_LEN)
		data_len = CGROUP_WRITE_DATA_LEN;
	data_len &= (CGROUP_WRITE_DATA_LEN * 2 - 1);
	if (data_len > CGROUP_WRITE_DATA_LEN)
		data_len = CGROUP_WRITE_DATA_LEN;
	if (bpf_probe_read_user(event->data, data_len, buf) != 0)
		data_len = 0;
	event->data_len = data_len;
	fill_header(&event->hdr, EVENT_CGROUP_WRITE, sizeof(*event));
	submit(event, sizeof(*event), EVENT_CGROUP_WRITE);
}

#endif /* TRACER_CGROUP_H */
