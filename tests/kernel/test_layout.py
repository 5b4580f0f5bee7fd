"""The Python mirror of bpf/events.h matches the structs as compiled."""

import ctypes
import os

import pytest

from tracer import events
from tracer.kernel import headers
from tracer.kernel.armer import HookState
from tracer.kernel.capture import BPF_DIR

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(os.geteuid() != 0, reason="compiles BPF: needs root")]

LAYOUT_SOURCE = os.path.join(os.path.dirname(__file__), "layout.bpf.c")


@pytest.fixture(scope="module")
def compiled():
    headers.mount_tracing_filesystems()
    headers.prepare_headers()
    from bcc import BPF

    bpf = BPF(src_file=LAYOUT_SOURCE.encode(), cflags=[f"-I{BPF_DIR}"])
    yield bpf
    bpf.cleanup()


def leaf(bpf, name):
    return bpf[f"layout_{name}".encode()].Leaf


@pytest.mark.parametrize("struct_name", sorted(events.STRUCT_SIZES))
def test_struct_sizes(compiled, struct_name):
    short = "header" if struct_name == "event_header" else struct_name.removesuffix("_event")
    assert ctypes.sizeof(leaf(compiled, short)) == events.STRUCT_SIZES[struct_name]


def test_header_field_offsets(compiled):
    header = leaf(compiled, "header")
    python_offsets = {"type": 0, "size": 2, "cpu": 4, "ktime_ns": 8, "pid": 16, "tgid": 20, "ppid": 24,
                      "start_ns": 32, "parent_start_ns": 40, "cgroup_id": 48, "cgroup_v1_id": 56,
                      "ns": 64, "comm": 88}
    for field, offset in python_offsets.items():
        assert getattr(header, field).offset == offset, field
    assert events.HEADER.size == 104


def test_body_offsets_follow_the_header(compiled):
    for short, body, first_field in (("fork", events.FORK_BODY, "child_pid"), ("exec", events.EXEC_BODY, "old_pid"),
                                     ("exit", events.EXIT_BODY, "exit_code"),
                                     ("namespace", events.NAMESPACE_BODY, "syscall"),
                                     ("mount", events.MOUNT_BODY, "ret"),
                                     ("cgroup", events.CGROUP_BODY, "hierarchy"),
                                     ("cgroup_write", events.CGROUP_WRITE_BODY, "fs_magic"),
                                     ("socket_open", events.SOCKET_OPEN_BODY, "endpoint"),
                                     ("socket_data", events.SOCKET_DATA_BODY, "endpoint")):
        assert getattr(leaf(compiled, short), first_field).offset == events.HEADER.size, short
    exec_leaf = leaf(compiled, "exec")
    assert exec_leaf.data.offset == events.HEADER.size + events.EXEC_BODY.size
    cgroup_write = leaf(compiled, "cgroup_write")
    assert cgroup_write.data.offset == events.STRUCT_SIZES["cgroup_write_event"] - events.CGROUP_WRITE_DATA_LEN


def test_socket_data_fields(compiled):
    data = leaf(compiled, "socket_data")
    endpoint_size = events.SOCKET_ENDPOINT.size
    assert data.syscall_bytes.offset == events.HEADER.size + endpoint_size
    assert data.direction.offset == events.HEADER.size + endpoint_size + 12
    assert data.data.offset == events.HEADER.size + events.SOCKET_DATA_BODY.size
    assert leaf(compiled, "socket_open").path.offset == events.HEADER.size + endpoint_size + events.TASK_COMM_LEN


def test_failure_event_fields(compiled):
    exec_failed, oom = leaf(compiled, "exec_failed"), leaf(compiled, "oom_kill")
    assert exec_failed.ret.offset == events.HEADER.size
    assert exec_failed.filename.offset == events.HEADER.size + events.EXEC_FAILED_BODY.size - events.FILENAME_MAX_LEN
    assert oom.victim_pid.offset == events.HEADER.size
    assert oom.total_vm_kb.offset == events.HEADER.size + 8
    assert oom.victim_comm.offset == events.HEADER.size + events.OOM_KILL_BODY.size - events.TASK_COMM_LEN


def test_exit_flags_follow_the_exit_code(compiled):
    exit_leaf = leaf(compiled, "exit")
    assert exit_leaf.flags.offset == events.HEADER.size + 4


def test_hook_state_mirror(compiled):
    """The armer's mirror of struct hook_state (bpf/hook_state.h)."""
    compiled_struct = leaf(compiled, "hook_state")
    assert ctypes.sizeof(compiled_struct) == ctypes.sizeof(HookState)
    assert [name for name, _ in compiled_struct._fields_] == [name for name, _ in HookState._fields_]
    for name, _ in HookState._fields_:
        assert getattr(compiled_struct, name).offset == getattr(HookState, name).offset, name
