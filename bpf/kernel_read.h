/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reads of kernel memory at an offset taken from BTF (a -D macro, see
 * tracer/kernel/offsets.py), never through a header's struct layout: the installed
 * headers rarely match the running kernel.  A failed read gives 0.
 */
#ifndef TRACER_KERNEL_READ_H
#define TRACER_KERNEL_READ_H

static __always_inline void *read_ptr(const void *base, __u32 offset)
{
	void *value = 0;
	bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
	return value;
}

static __always_inline __u64 read_u64(const void *base, __u32 offset)
{
	__u64 value = 0;
	bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
	return value;
}

static __always_inline __u32 read_u32(const void *base, __u32 offset)
{
	__u32 value = 0;
	bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
	return value;
}

static __always_inline __u16 read_u16(const void *base, __u32 offset)
{
	__u16 value = 0;
	bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
	return value;
}

#endif
