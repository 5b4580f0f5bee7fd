/* SPDX-License-Identifier: Apache-2.0 */
/* The x86-64 syscall table of the sys_enter/sys_exit dispatcher. */
#ifndef TRACER_SYSCALLS_X86_64_H
#define TRACER_SYSCALLS_X86_64_H

/* Syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).  The arguments
 * are in pt_regs di, si, dx, r10, read at BTF offsets (OFF_PT_REGS_*). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_CLOSE 3
#define NR_READV 19
#define NR_WRITEV 20
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_CLONE 56
#define NR_VFORK 58
#define NR_EXECVE 59
#define NR_PIVOT_ROOT 155
#define NR_MOUNT 165
#define NR_UNSHARE 272
#define NR_ACCEPT4 288
#define NR_SETNS 308
#define NR_EXECVEAT 322
#define NR_CLONE3 435
#define MAX_ERRNO 4095

#define NR_BIT(nr) (1ULL << (nr))
#define IO_SYSCALLS (NR_BIT(NR_READ) | NR_BIT(NR_WRITE) | NR_BIT(NR_READV) | NR_BIT(NR_WRITEV) | \
		     NR_BIT(NR_SENDTO) | NR_BIT(NR_RECVFROM) | NR_BIT(NR_SENDMSG) | NR_BIT(NR_RECVMSG))
/* every handled syscall numbered below 64, as one mask */
#define LOW_SYSCALLS (IO_SYSCALLS | NR_BIT(NR_CLOSE) | NR_BIT(NR_CONNECT) | NR_BIT(NR_ACCEPT) | \
		      NR_BIT(NR_CLONE) | NR_BIT(NR_VFORK) | NR_BIT(NR_EXECVE))
/* vfork(2) has no flags argument; these are the ones it implies. */
#define VFORK_CLONE_FLAGS (0x00004000 /* CLONE_VFORK */ | 0x00000100 /* CLONE_VM */ | 17 /* SIGCHLD */)

#endif /* TRACER_SYSCALLS_X86_64_H */
