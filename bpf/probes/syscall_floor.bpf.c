/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The floor of the tracer's syscall hooks, for the benchmark (bench/floor.py):
 * raw sys_enter and sys_exit programs that do nothing.  Whatever a workload
 * loses with these attached, no program on these hooks can win back: it is
 * the price of the hooks themselves (every task takes the syscall slow path
 * and runs two BPF programs per syscall).
 */

RAW_TRACEPOINT_PROBE(sys_enter)
{
	return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
	return 0;
}
