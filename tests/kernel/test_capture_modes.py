"""The capture on the real kernel, in both modes (tracer.kernel.modes):
CRI bytes from the socket tracepoints or the syscall programs, clone flags,
and, on demand, the syscall program attached only while a runtime worker
lives, with what a worker that ran unhooked is flagged for.

Runtime processes are stood in for by copies of the Python interpreter named
`containerd` (tracked at exec, by its comm) and `runc` (a worker)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tracer.events import (
    EventType,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    NamespaceEvent,
    SocketCloseEvent,
    SocketDataEvent,
    SocketDirection,
    SocketOpenEvent,
    SocketSide,
    decode,
)
from tracer.format import unwatched_cause_names
from tracer.kernel.capture import Capture, CaptureConfig
from tracer.kernel.modes import Mode, choose_mode

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs; needs root"),
    pytest.mark.filterwarnings("ignore:not a bytes object:DeprecationWarning"),
]

MODES = [Mode.ON_DEMAND.value, Mode.ALWAYS.value]
CLONE_NEWUTS = 0x04000000
CLONE_NEWNS = 0x00020000


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    """A directory with `containerd` and `runc`: copies of Debian's
    interpreter (a copy finds its library where Debian put it)."""
    directory = tmp_path_factory.mktemp("programs")
    interpreter = os.path.realpath("/usr/bin/python3")
    for name in ("containerd", "runc"):
        shutil.copy(interpreter, directory / name)
    return directory


def capture_events(config: CaptureConfig, action: Callable[[Capture], None],
                   settle_s: float = 0.3) -> tuple[list, Capture]:
    """Every event the capture saw while `action` ran; the capture, closed."""
    capture = Capture(config)
    batches: list[list[bytes]] = []
    capture.on_batch = batches.append
    capture.start()
    try:
        action(capture)
        time.sleep(settle_s)
        capture.drain()
    finally:
        capture.close()
    return [decode(raw) for batch in batches for raw in batch], capture


def run_as_runtime(programs: Path, worker_code: str, before_fork: str = "", subcommand: str = "create") -> int:
    """`containerd` forks a `runc <subcommand>` running `worker_code`; returns runc's pid."""
    parent = (f"import ctypes, os, sys\n{before_fork}\n"
              f"pid = os.fork()\n"
              f"if pid == 0:\n"
              f"    os.execv({str(programs / 'runc')!r}, ['runc', '-S', '-c', sys.argv[1], {subcommand!r}])\n"
              f"print(pid)\n"
              f"sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    done = subprocess.run([str(programs / "containerd"), "-S", "-c", parent, worker_code],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


WORKERS = {
    # what the worker does, and what of it the syscall program would show (the
    # cause its exit names, tracer.format.unwatched_cause_names; none: not flagged)
    "nothing": ("pass", []),
    "a write": ("import os; os.write(os.open('/dev/null', os.O_WRONLY), b'x')", ["wrote"]),
    "an unshare": (f"import ctypes; assert ctypes.CDLL(None).unshare({CLONE_NEWUTS}) == 0", ["changed namespaces"]),
    "a mount": ("import ctypes; assert ctypes.CDLL(None).mount(b'none', b'/mnt', b'tmpfs', 0, None) == 0",
                ["changed its mount namespace"]),
}
# a private mount namespace, so that the worker's mount stays its own
PRIVATE_MOUNTS = (f"assert ctypes.CDLL(None).unshare({CLONE_NEWNS}) == 0\n"
                  f"assert ctypes.CDLL(None).mount(b'none', b'/', None, 0x40000 | 0x4000, None) == 0")


@pytest.mark.parametrize("what", sorted(WORKERS))
def test_a_worker_that_ran_unhooked_is_flagged_when_it_did_what_the_program_shows(programs, what):
    """No armer: the syscall program is never attached, every worker runs
    unhooked; only one that did something the traces show is flagged."""
    code, shows = WORKERS[what]
    if choose_mode().mode is not Mode.ON_DEMAND:
        pytest.skip("this kernel has no socket tracepoints: no on-demand mode")
    worker: list[int] = []
    events, capture = capture_events(CaptureConfig(armer=False),
                                     lambda _: worker.append(run_as_runtime(programs, code, PRIVATE_MOUNTS)))
    mine = [e for e in events if e.header.tgid == worker[0]]
    execs = [e for e in mine if isinstance(e, ExecEvent)]
    exits = [e for e in mine if isinstance(e, ExitEvent)]
    assert [e.filename for e in execs] == [str(programs / "runc")] and len(exits) == 1
    assert not execs[0].unwatched  # it was born unhooked: what it did is known at its end
    assert exits[0].unwatched is bool(shows), what
    assert unwatched_cause_names(exits[0].unwatched_causes_raw) == shows, what
    assert not [e for e in mine if isinstance(e, NamespaceEvent)]  # nothing hooked it
    assert capture.stats.kernel_stats.get("workers_full", 0) == 0


def test_only_runc_create_and_run_are_workers(programs):
    """`runc kill` or `runc delete` (a pod's stop) is no worker: it asks for
    no syscall program, and nothing it does flags it."""
    if choose_mode().mode is not Mode.ON_DEMAND:
        pytest.skip("this kernel has no socket tracepoints: no on-demand mode")
    pids: dict[str, int] = {}
    requests: list[float] = []

    def action(capture: Capture) -> None:
        for subcommand in ("kill", "delete"):
            pids[subcommand] = run_as_runtime(programs, WORKERS["a write"][0], subcommand=subcommand)
        requests.append(capture.hook_figures()["requests"])
        for subcommand in ("create", "run"):
            pids[subcommand] = run_as_runtime(programs, WORKERS["a write"][0], subcommand=subcommand)
        requests.append(capture.hook_figures()["requests"])

    events, _ = capture_events(CaptureConfig(armer=False), action)
    flagged = {name for name, pid in pids.items()
               if any(e.unwatched for e in events if isinstance(e, ExitEvent) and e.header.tgid == pid)}
    assert flagged == {"create", "run"}
    assert requests[1] - requests[0] >= 2  # each asked for the program (others on the node may too)


def test_the_armer_attaches_while_a_worker_lives(programs, tmp_path):
    """With the armer, a worker's syscalls are seen (here an unshare made
    after a pause), and the program goes once the worker has exited."""
    if choose_mode().mode is not Mode.ON_DEMAND:
        pytest.skip("this kernel has no socket tracepoints: no on-demand mode")
    log = tmp_path / "armer.log"
    worker: list[int] = []
    figures: dict[str, float] = {}

    def action(capture: Capture) -> None:
        code = f"import ctypes, time; time.sleep(0.5); assert ctypes.CDLL(None).unshare({CLONE_NEWUTS}) == 0"
        worker.append(run_as_runtime(programs, code))
        deadline = time.monotonic() + 10
        while capture.hook_figures()["attached"] and time.monotonic() < deadline:
            time.sleep(0.01)
        figures.update(capture.hook_figures())

    events, _ = capture_events(CaptureConfig(armer_log=str(log), armer_hold_s=0.0), action)
    mine = [e for e in events if e.header.tgid == worker[0]]
    namespaces = [e for e in mine if isinstance(e, NamespaceEvent)]
    assert [(e.flags_raw, e.ret) for e in namespaces] == [(CLONE_NEWUTS, 0)]
    assert not any(e.unwatched for e in mine if isinstance(e, (ExecEvent, ExitEvent)))
    assert figures["attaches"] >= 1 and figures["attached"] == 0 and figures["workers"] == 0
    lines = log.read_text().split("\n")
    assert lines[0].startswith("attach ") and any(line.startswith("detach ") for line in lines)


def test_a_pod_changing_sized_cri_request_asks_for_the_syscall_program(tmp_path):
    """A request of ARM_REQUEST_BYTES or more on a runtime socket (the
    client's write, the runtime's read of it) asks for the program ahead of
    the workers it causes; a real kubelet's polls, smaller, never do; nor
    does a runtime's large response."""
    if choose_mode().mode is not Mode.ON_DEMAND:
        pytest.skip("this kernel has no socket tracepoints: no on-demand mode")
    path = str(tmp_path / "runtime.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    requests: list[float] = []

    def action(capture: Capture) -> None:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        server, _ = listener.accept()
        requests.append(capture.hook_figures()["requests"])
        for _ in range(20):                 # polls: 299 bytes, each read whole
            client.sendall(b"p" * 299)
            assert len(server.recv(4096)) == 299
            server.sendall(b"r" * 4000)     # a large response asks for nothing
            got = 0
            while got < 4000:
                got += len(client.recv(8192))
        requests.append(capture.hook_figures()["requests"])
        client.sendall(b"q" * 560)          # a RunPodSandbox's size
        got = 0
        while got < 560:
            got += len(server.recv(4096))
        requests.append(capture.hook_figures()["requests"])
        client.close()
        server.close()

    capture_events(CaptureConfig(cri_sockets=(path,), armer=False), action)
    listener.close()
    assert requests[1] == requests[0]
    assert requests[2] - requests[1] >= 1  # the write (and the read, unless in one piece with it)


@pytest.mark.parametrize("mode", MODES)
def test_clone_flags_are_those_the_parent_asked_for(programs, mode):
    """From the fork tracepoint's registers (on demand) or sys_enter (always):
    a fork() and a vfork-style spawn of a tracked process."""
    if mode == Mode.ON_DEMAND.value and choose_mode().mode is not Mode.ON_DEMAND:
        pytest.skip("this kernel has no socket tracepoints: no on-demand mode")
    code = "import os, subprocess; pid = os.fork()\nif pid == 0: os._exit(0)\nos.waitpid(pid, 0); subprocess.run(['/bin/true'])"
    parent: list[int] = []

    def action(_: Capture) -> None:
        done = subprocess.run([str(programs / "containerd"), "-S", "-c", f"import os; print(os.getpid())\n{code}"],
                              check=True, capture_output=True, text=True)
        parent.append(int(done.stdout))

    events, _ = capture_events(CaptureConfig(syscall_programs=mode, armer=False), action)
    flags = [e.clone_flags_raw for e in events if isinstance(e, ForkEvent) and e.header.tgid == parent[0]]
    # glibc's fork(): CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD; the
    # spawn: CLONE_VM | CLONE_VFORK | SIGCHLD
    assert flags == [0x01200011, 0x4111]


@pytest.mark.parametrize("mode", MODES)
def test_a_runtime_sockets_bytes_in_both_directions(tmp_path, mode):
    """Every read and write call the CRI clients and runtimes make, on both
    ends of a connection to a runtime socket, in order, and its end."""
    if mode == Mode.ON_DEMAND.value and choose_mode().mode is not Mode.ON_DEMAND:
        pytest.skip("this kernel has no socket tracepoints: no on-demand mode")
    path = str(tmp_path / "runtime.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    sent = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"ab" + b"c" * 9000, b"writev", b"sendmsg"]
    calls: dict[str, int] = {}

    def action(_: Capture) -> None:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        server, _ = listener.accept()
        client.send(sent[0])                                    # sendto
        assert server.recv(100) == sent[0]                      # recvfrom
        os.write(client.fileno(), sent[1])                      # write
        got = b""
        while len(got) < len(sent[1]):
            got += os.read(server.fileno(), 65536)              # read
        os.writev(client.fileno(), [sent[2][:3], sent[2][3:]])  # writev
        buffers = [bytearray(3), bytearray(10)]
        assert os.readv(server.fileno(), buffers) == len(sent[2])  # readv
        client.sendmsg([sent[3][:4], sent[3][4:]])              # sendmsg
        assert server.recvmsg(100)[0] == sent[3]                # recvmsg
        server.sendall(b"reply")
        assert client.recv(100) == b"reply"
        calls["client"], calls["server"] = client.fileno(), server.fileno()
        client.close()
        assert server.recv(100) == b""                          # the end of the stream
        server.close()

    events, _ = capture_events(CaptureConfig(syscall_programs=mode, cri_sockets=(path,), armer=False), action)
    listener.close()
    me = os.getpid()
    opens = [e for e in events if isinstance(e, SocketOpenEvent) and e.header.tgid == me]
    sides = {e.endpoint.side: e.endpoint for e in opens}
    assert set(sides) == {SocketSide.CLIENT, SocketSide.SERVER}
    assert sides[SocketSide.CLIENT].peer_inode == sides[SocketSide.SERVER].inode or \
        sides[SocketSide.SERVER].peer_inode == sides[SocketSide.CLIENT].inode

    def stream(side: SocketSide, direction: SocketDirection) -> bytes:
        inode = sides[side].inode
        return b"".join(e.data for e in events if isinstance(e, SocketDataEvent)
                        and e.endpoint.inode == inode and e.direction is direction)

    assert stream(SocketSide.CLIENT, SocketDirection.OUT) == b"".join(sent)
    assert stream(SocketSide.SERVER, SocketDirection.IN) == b"".join(sent)
    assert stream(SocketSide.SERVER, SocketDirection.OUT) == b"reply"
    assert stream(SocketSide.CLIENT, SocketDirection.IN) == b"reply"
    closed = {e.endpoint.inode for e in events if isinstance(e, SocketCloseEvent)}
    assert {sides[SocketSide.CLIENT].inode, sides[SocketSide.SERVER].inode} <= closed
    first = [e for e in events if isinstance(e, SocketDataEvent) and e.endpoint.inode == sides[SocketSide.CLIENT].inode]
    assert first[0].data == sent[0] and first[0].offset == 0 and first[0].syscall_bytes == len(sent[0])
