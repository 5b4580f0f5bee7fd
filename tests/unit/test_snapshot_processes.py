"""Processes found running at start (/proc snapshots) that act later.

A snapshot knows a process's start time only to the clock tick; the kernel's
events carry it to the nanosecond.  The first event of such a process must
find the snapshot's process, and everything that refers to that process
(its owner container, its children) must keep finding it: the daemon, run
as the DaemonSet's pod, is itself such a process (a descendant of its pod's
shim, seeded at start), and crashed on its first export when its own next
event renamed it under the correlator's feet.
"""

from __future__ import annotations

from tracer.correlate.pods import PodAssembler
from tracer.events import EventType, ExecEvent, ExitEvent, ForkEvent, Header, Namespaces

SANDBOX = "a" * 64
SHIM, APP = 100, 101
TICK_NS = 10_000_000
SHIM_START = 50 * TICK_NS  # a multiple of the tick, as /proc gives it
APP_START = 60 * TICK_NS
APP_EXACT_START = APP_START + 4_321_000  # the kernel's own value, within a tick
NOW = 100 * 10**9


def header(kind: EventType, tgid: int, start_ns: int, ppid: int, parent_start_ns: int, ktime_ns: int,
           comm: str) -> Header:
    return Header(type=kind, size=0, cpu=0, ktime_ns=ktime_ns, pid=tgid, tgid=tgid, ppid=ppid, start_ns=start_ns,
                  parent_start_ns=parent_start_ns, cgroup_id=7, cgroup_v1_id=0, ns=Namespaces(), comm=comm)


def snapshot(tgid: int, start_ns: int, ppid: int, parent_start_ns: int, argv: tuple[str, ...]) -> ExecEvent:
    comm = argv[0].rsplit("/", 1)[-1][:15]
    return ExecEvent(header(EventType.PROC_SNAPSHOT, tgid, start_ns, ppid, parent_start_ns, NOW - 10**9, comm),
                     tgid, argv[0], argv)


def seeded_pod() -> PodAssembler:
    """A pod's shim and its container process, both found running at start."""
    assembler = PodAssembler()
    assembler.feed(snapshot(SHIM, SHIM_START, 1, 0, ("/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io",
                                                     "-id", SANDBOX, "-address", "/run/containerd/containerd.sock")))
    assembler.feed(snapshot(APP, APP_START, SHIM, SHIM_START, ("/opt/venv/bin/python3", "/opt/venv/bin/tracer",
                                                               "daemon")))
    assert assembler.owner[(APP, APP_START)] == SANDBOX
    return assembler


def test_a_seeded_process_that_forks_keeps_its_identity_and_owner():
    assembler = seeded_pod()
    exact = header(EventType.FORK, APP, APP_EXACT_START, SHIM, SHIM_START + 1_234, NOW - 5 * 10**8, "tracer")
    assembler.feed(ForkEvent(exact, 102, 102, APP_EXACT_START + 10**8, 0))

    (app,) = [p for p in assembler.table.processes.values() if p.pid == APP]
    assert assembler.table.get((APP, APP_EXACT_START)) is app  # the kernel's key finds it
    assert assembler.table.get(app.key) is app
    assert assembler.owner[app.key] == SANDBOX
    assert app.key in assembler.containers[SANDBOX].processes
    forked = assembler.table.get((102, APP_EXACT_START + 10**8))
    assert forked is not None and forked.parent_key == app.key
    # exporting walks every process of the pod: none may be missing
    assembler.take_finished(NOW, 2 * 10**9, 300 * 10**9)


def test_exporting_a_pod_whose_seeded_process_acted_does_not_fail():
    assembler = seeded_pod()
    assembler.feed(ExitEvent(header(EventType.EXIT, APP, APP_EXACT_START, SHIM, SHIM_START, NOW - 10**8, "tracer"), 0))
    for _ in range(2):  # and again, once pruning has had its turn
        assembler.take_finished(NOW, 2 * 10**9, 300 * 10**9)
    assembler.prune(NOW + 10**12)
    assembler.take_finished(NOW + 10**12, 2 * 10**9, 300 * 10**9)


def test_a_seeded_parent_is_found_by_the_kernel_key_its_new_child_names():
    assembler = seeded_pod()
    new_child = header(EventType.EXEC, 103, APP_EXACT_START + 2 * 10**8, APP, APP_EXACT_START, NOW - 10**8, "sh")
    assembler.feed(ExecEvent(new_child, 103, "/bin/sh", ("/bin/sh", "-c", "true")))
    child = assembler.table.get((103, APP_EXACT_START + 2 * 10**8))
    app = assembler.table.get((APP, APP_EXACT_START))  # re-keyed to the kernel's exact start
    assert child is not None and app is not None
    assert child.parent_key == app.key and child.key in app.children
    assert assembler.owner[child.key] == SANDBOX
    assembler.take_finished(NOW, 2 * 10**9, 300 * 10**9)
