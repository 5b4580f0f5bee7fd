/* SPDX-License-Identifier: Apache-2.0 */
/* Syscall numbers for the one sys_enter and one sys_exit program. */
#ifndef TRACER_SYSCALLS_H
#define TRACER_SYSCALLS_H

/* The dispatcher numbers syscalls and reads their arguments the way the
 * architecture does; a table per architecture, and none is guessed. */
#if defined(__x86_64__)
#include "syscalls/x86_64.h"
#else
#error "tracer: no syscall table for this architecture (bpf/syscalls/<arch>.h)"
#endif

#endif /* TRACER_SYSCALLS_H */
