/* One map per event struct, so that the test can read each struct's
 * layout, as clang compiled it, from bcc's ctypes mirror of the map. */
#include "events.h"
#include "hook_state.h"

BPF_ARRAY(layout_header, struct event_header, 1);
BPF_ARRAY(layout_fork, struct fork_event, 1);
BPF_ARRAY(layout_exec, struct exec_event, 1);
BPF_ARRAY(layout_exit, struct exit_event, 1);
BPF_ARRAY(layout_namespace, struct namespace_event, 1);
BPF_ARRAY(layout_mount, struct mount_event, 1);
BPF_ARRAY(layout_pivot_root, struct pivot_root_event, 1);
BPF_ARRAY(layout_cgroup, struct cgroup_event, 1);
BPF_ARRAY(layout_cgroup_write, struct cgroup_write_event, 1);
BPF_ARRAY(layout_socket_open, struct socket_open_event, 1);
BPF_ARRAY(layout_socket_close, struct socket_close_event, 1);
BPF_ARRAY(layout_socket_data, struct socket_data_event, 1);
BPF_ARRAY(layout_exec_failed, struct exec_failed_event, 1);
BPF_ARRAY(layout_oom_kill, struct oom_kill_event, 1);
BPF_ARRAY(layout_hook_state, struct hook_state, 1);
