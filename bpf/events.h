/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one event header shared by the BPF programs and userspace.
 *
 * Every event starts with struct event_header; `type` selects the body that
 * follows and `size` is the number of bytes actually sent (variable-size
 * events only send what they used).  tracer/events.py mirrors these structs
 * exactly once, and tests/kernel/test_layout.py checks the mirror against
 * the compiled program, so change both together and bump EVENT_ABI_VERSION.
 *
 * All values are raw kernel values: times are CLOCK_MONOTONIC nanoseconds,
 * flags and exit codes are undecoded.  Userspace formats them in one place.
 */
#ifndef TRACER_EVENTS_H
#define TRACER_EVENTS_H

#define EVENT_ABI_VERSION 1

#define TASK_COMM_LEN 16
#define FILENAME_MAX_LEN 256
#define ARGV_MAX_LEN 4096          /* power of two: used as a mask */
#define ENV_MAX_LEN 8192           /* power of two: used as a mask */
#define PATH_MAX_LEN 256           /* mount paths, pivot_root paths */
#define FSTYPE_MAX_LEN 32
#define CGROUP_PATH_MAX_LEN 512
#define CGROUP_NAME_LEN 128        /* one dentry name */
#define CGROUP_NAME_DEPTH 4        /* leaf file + 3 parent directories */
#define CGROUP_WRITE_DATA_LEN 128
#define SOCKET_SEGMENT_LEN 8192    /* power of two: used as a mask */
#define SOCKET_PATH_LEN 108        /* sizeof(sockaddr_un.sun_path) */

enum event_type {
	EVENT_FORK = 1,           /* a new process (not a thread) */
	EVENT_EXEC = 2,
	EVENT_EXIT = 3,           /* the whole thread group is gone */
	EVENT_NAMESPACE = 4,      /* unshare(2) or setns(2) returned */
	EVENT_MOUNT = 5,          /* mount(2) returned */
	EVENT_PIVOT_ROOT = 6,     /* pivot_root(2) returned */
	EVENT_CGROUP_MKDIR = 7,
	EVENT_CGROUP_ATTACH = 8,
	EVENT_CGROUP_WRITE = 9,   /* write(2) to a cgroup control file */
	EVENT_SOCKET_OPEN = 10,   /* a CRI connection: connect(2) or accept(2) */
	EVENT_SOCKET_DATA = 11,   /* bytes read from or written to a CRI connection */
	EVENT_SOCKET_CLOSE = 12,
	EVENT_EXEC_FAILED = 13,   /* execve(2) or execveat(2) failed */
	EVENT_OOM_KILL = 14,      /* the OOM killer chose a tracked process */
	/* Types >= 64 are made by userspace, never by the kernel. */
	EVENT_PROC_SNAPSHOT = 64, /* a process that existed when tracing began */
	EVENT_TYPE_MAX = 128,
};

/* Namespace inode numbers of the task that emitted the event, read from
 * task->nsproxy after the event happened.  pid is pid_for_children. */
struct namespaces {
	__u32 mnt;
	__u32 pid;
	__u32 net;
	__u32 uts;
	__u32 ipc;
	__u32 cgroup;
};

struct event_header {
	__u16 type;
	__u16 size;                 /* bytes of the whole event as sent */
	__u32 cpu;
	__u64 ktime_ns;             /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 pid;                  /* thread id */
	__u32 tgid;                 /* process id */
	__u32 ppid;                 /* real_parent's tgid */
	__u32 _pad0;
	__u64 start_ns;             /* group leader's start_time: identity */
	__u64 parent_start_ns;      /* real_parent leader's start_time */
	__u64 cgroup_id;            /* cgroup v2 id (kernfs id) */
	__u64 cgroup_v1_id;         /* memory controller's cgroup id, 0 if none */
	struct namespaces ns;
	char comm[TASK_COMM_LEN];
};

struct fork_event {
	struct event_header hdr;    /* the parent */
	__u32 child_pid;
	__u32 child_tgid;
	__u64 child_start_ns;
	__u64 clone_flags;          /* from clone/clone3 entry; 0 for fork() */
};

struct exec_event {
	struct event_header hdr;    /* the task after exec */
	__u32 old_pid;              /* the thread that called exec */
	__u16 filename_len;         /* bytes used, including the NUL */
	__u16 argv_len;             /* bytes of NUL-separated argv copied */
	__u16 env_len;              /* bytes of the environment copied */
	__u16 flags;                /* EXEC_FLAG_* */
	__u32 _pad0;
	/* filename, then argv, then env; only the used bytes are sent */
	char data[FILENAME_MAX_LEN * 2 + ARGV_MAX_LEN + ENV_MAX_LEN];
};

#define EXEC_FLAG_ARGV_TRUNCATED 0x1
#define EXEC_FLAG_ENV_CAPTURED 0x2  /* a CNI plugin: its environment follows argv */
#define EXEC_FLAG_ENV_TRUNCATED 0x4
#define EXEC_FLAG_ENV_FILTERED 0x8  /* set by userspace: only CNI_* keys kept */
/* The process (a runtime worker) ran while the syscall program was detached
 * and may have made syscalls that were not seen (bpf/arming.h). */
#define EXEC_FLAG_UNWATCHED 0x10

/* Why: what the process did unhooked, or why it could not be vouched for, in
 * the flags' bits from UNWATCHED_CAUSE_SHIFT on (exec and exit events alike). */
#define UNWATCHED_CAUSE_SHIFT 8
#define UNWATCHED_NAMESPACES 0x1    /* a thread's namespaces changed */
#define UNWATCHED_WRITES 0x2        /* a thread wrote (a cgroup file? a failed exec's report?) */
#define UNWATCHED_MOUNTS 0x4        /* its mount namespace changed */
#define UNWATCHED_UNKNOWN 0x8       /* cannot tell: its baseline was evicted, or the kernel keeps no such traces */
#define UNWATCHED_DETACHED 0x10     /* it lived across a detach */
#define UNWATCHED_UNVOUCHED 0x20    /* the workers map had no room for it */

struct exit_event {
	struct event_header hdr;
	__u32 exit_code;            /* task->exit_code: (status << 8) | signal */
	__u32 flags;                /* EXIT_FLAG_* */
};

#define EXIT_FLAG_UNWATCHED 0x1     /* as EXEC_FLAG_UNWATCHED */

/* Why a program did not start: runc's stage 2 reports only "exit 1". */
struct exec_failed_event {
	struct event_header hdr;
	__s32 ret;                  /* -errno */
	__u16 filename_len;         /* bytes used, including the NUL */
	__u16 _pad0;
	char filename[FILENAME_MAX_LEN];
};

/* From oom:mark_victim; sizes are the tracepoint's, in KiB. */
struct oom_kill_event {
	struct event_header hdr;    /* the task whose allocation ran the OOM killer */
	__u32 victim_pid;           /* the victim's tgid */
	__s16 victim_oom_score_adj;
	__u16 _pad0;
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__u64 shmem_rss_kb;
	char victim_comm[TASK_COMM_LEN];
};

enum namespace_syscall {
	NS_SYSCALL_UNSHARE = 1,
	NS_SYSCALL_SETNS = 2,
};

struct namespace_event {
	struct event_header hdr;    /* namespaces after the call */
	__u32 syscall;              /* enum namespace_syscall */
	__s32 fd;                   /* setns only */
	__u64 flags;                /* unshare flags or setns nstype */
	__s64 ret;
};

struct mount_event {
	struct event_header hdr;
	__s64 ret;
	__u64 flags;
	char source[PATH_MAX_LEN];
	char target[PATH_MAX_LEN];
	char fstype[FSTYPE_MAX_LEN];
};

struct pivot_root_event {
	struct event_header hdr;
	__s64 ret;
	char new_root[PATH_MAX_LEN];
	char put_old[PATH_MAX_LEN];
};

struct cgroup_event {
	struct event_header hdr;    /* the writer, usually runc */
	__s32 hierarchy;            /* root: hierarchy id, 0 is cgroup v2 */
	__s32 level;
	__u64 cgroup_id;
	__u32 target_pid;           /* attach only: the task moved */
	__u16 path_len;
	__u16 _pad0;
	char path[CGROUP_PATH_MAX_LEN];  /* relative to the hierarchy's root */
};

struct cgroup_write_event {
	struct event_header hdr;
	__u64 fs_magic;             /* CGROUP_SUPER_MAGIC or CGROUP2_SUPER_MAGIC */
	__u64 count;                /* bytes the caller asked to write */
	__u32 fd;
	__u16 data_len;             /* bytes of data copied */
	__u16 _pad0;
	/* CGROUP_NAME_DEPTH names of CGROUP_NAME_LEN bytes: the file's, its
	 * directory's, and so on upwards */
	char names[CGROUP_NAME_DEPTH * CGROUP_NAME_LEN];
	char data[CGROUP_WRITE_DATA_LEN];
};

enum socket_side {
	SOCKET_SIDE_CLIENT = 1,     /* it connected to the runtime's socket */
	SOCKET_SIDE_SERVER = 2,     /* the runtime accepted it */
};

enum socket_direction {
	SOCKET_DIRECTION_OUT = 1,   /* written by this endpoint */
	SOCKET_DIRECTION_IN = 2,    /* read by this endpoint */
};

/* One CRI connection endpoint, as the BPF programs know it. */
struct socket_endpoint {
	__u64 inode;                /* this end's socket inode */
	__u64 peer_inode;           /* the other end's, 0 until known */
	__u32 fd;
	__u8 side;                  /* enum socket_side */
	__u8 _pad0[3];
};

struct socket_open_event {
	struct event_header hdr;
	struct socket_endpoint endpoint;
	char process_comm[TASK_COMM_LEN]; /* the group leader's: threads rename themselves */
	char path[SOCKET_PATH_LEN]; /* connect only: the path asked for */
	__u32 _pad0;
};

struct socket_close_event {
	struct event_header hdr;
	struct socket_endpoint endpoint;
};

#define SOCKET_FLAG_TRUNCATED 0x1   /* the syscall moved more than was copied */
#define SOCKET_FLAG_GAP_BEFORE 0x2  /* records of this endpoint and direction were lost before this one */

/* A syscall's bytes are sent as consecutive segments of at most
 * SOCKET_SEGMENT_LEN; `offset` is the segment's place in the syscall. */
struct socket_data_event {
	struct event_header hdr;
	struct socket_endpoint endpoint;
	__u32 syscall_bytes;        /* what the syscall returned */
	__u32 offset;
	__u32 data_len;
	__u8 direction;             /* enum socket_direction */
	__u8 flags;
	__u16 syscall;              /* the syscall's number, for the record */
	/* twice the segment: the gathering copy bounds an offset and a length
	 * below SOCKET_SEGMENT_LEN each, which the verifier adds up */
	char data[SOCKET_SEGMENT_LEN * 2];
};

#endif /* TRACER_EVENTS_H */
