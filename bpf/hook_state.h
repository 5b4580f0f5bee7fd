/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state of the syscall program that is attached only while the runtime
 * works, shared by the BPF programs (arming.h) and the armer
 * (tracer/kernel/armer.py, through a mapping of the `hooks` map).  Each field
 * has one writer.  tracer/kernel/armer.py mirrors the struct exactly once,
 * and tests/kernel/test_layout.py checks the mirror.
 */
#ifndef TRACER_HOOK_STATE_H
#define TRACER_HOOK_STATE_H

struct hook_state {
	/* written by the armer */
	__u64 armed;                 /* 1 from just after sys_exit is attached to just before it is detached */
	__u64 epoch;                 /* +1 at every detach */
	__u64 attaches;              /* how often it was attached */
	__u64 attached_ns;           /* time attached, up to the last detach */
	__u64 attached_since_ns;     /* CLOCK_MONOTONIC of the current attach; 0 while detached */
	__u64 attach_latency_max_ns; /* longest request → attached */
	__u64 attach_latency_sum_ns;
	__u64 forced_detaches;       /* detached while workers lived (stuck, by the armer's limit) */
	/* written by the BPF programs */
	__u64 workers;               /* runtime workers alive (atomic) */
	__u64 last_request_ns;       /* the last exec that asked for the syscall program */
	__u64 requests;              /* wake-ups sent to the armer (atomic) */
};

#endif /* TRACER_HOOK_STATE_H */
