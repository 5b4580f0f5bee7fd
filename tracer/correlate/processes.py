"""The process tree, keyed by (tgid, start time): pids alone get reused.

It is fed decoded events in time order and keeps, per process, its parent,
its execs, the image it was forked running (a child runs its parent's
program until it execs), its exit, and the activity (namespace, mount,
cgroup events) that it performed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tracer.events import (
    CgroupEvent,
    CgroupWriteEvent,
    Event,
    EventType,
    ExecEvent,
    ExecFailedEvent,
    ExitEvent,
    ForkEvent,
    Header,
    MountEvent,
    NamespaceEvent,
    Namespaces,
    OomKillEvent,
    PivotRootEvent,
)
from tracer.kernel.procfs import SNAPSHOT_START_TOLERANCE_NS

ProcKey = tuple[int, int]
Activity = NamespaceEvent | MountEvent | PivotRootEvent | CgroupEvent | CgroupWriteEvent | ExecFailedEvent


@dataclass(frozen=True, slots=True)
class Exec:
    ktime_ns: int
    filename: str
    argv: tuple[str, ...]
    env: dict[str, str]
    argv_truncated: bool
    from_snapshot: bool = False  # found running when tracing began

    @property
    def basename(self) -> str:
        first = self.argv[0] if self.argv else self.filename
        return first.rsplit("/", 1)[-1]


@dataclass
class Process:
    key: ProcKey
    parent_key: ProcKey | None
    fork_ns: int | None = None           # None: created before we saw it
    inherited: Exec | None = None        # the program it was forked running
    execs: list[Exec] = field(default_factory=list)
    exit_ns: int | None = None
    exit_code_raw: int | None = None
    comm: str = ""
    cgroup_id: int = 0
    namespaces: Namespaces = Namespaces()
    children: list[ProcKey] = field(default_factory=list)
    activity: list[Activity] = field(default_factory=list)
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    real_parent_pid: int = 0             # the kernel's parent (creator may differ: CLONE_PARENT)
    clone_flags_raw: int | None = None
    oom_kill: OomKillEvent | None = None  # the OOM killer chose it
    gone_by_ns: int | None = None        # its exit was never seen, but its pid was someone else's by then
    # a runtime worker that ran while the syscall program was detached and
    # may have made syscalls that were not seen (bpf/arming.h), and why
    # (UNWATCHED_* bits; none from a kernel side that did not say)
    unwatched: bool = False
    unwatched_causes_raw: int = 0

    @property
    def exec_failures(self) -> list[ExecFailedEvent]:
        return [a for a in self.activity if isinstance(a, ExecFailedEvent)]

    @property
    def pid(self) -> int:
        return self.key[0]

    @property
    def image(self) -> Exec | None:
        """The program it runs now (its last exec, or what it inherited)."""
        return self.execs[-1] if self.execs else self.inherited

    @property
    def start_ns(self) -> int:
        """When it began, as far as we saw: fork, else first exec, else first event."""
        if self.fork_ns is not None:
            return self.fork_ns
        if self.execs and not self.execs[0].from_snapshot:
            return self.execs[0].ktime_ns
        return self.first_seen_ns

    @property
    def seen_from_start(self) -> bool:
        return self.fork_ns is not None or bool(self.execs and not self.execs[0].from_snapshot)



class ProcessTable:
    def __init__(self, on_rekey: Callable[[ProcKey, ProcKey], None] | None = None) -> None:
        self.processes: dict[ProcKey, Process] = {}
        self._snapshots: dict[int, ProcKey] = {}   # tgid → key of a /proc snapshot
        self._running: dict[int, ProcKey] = {}     # tgid → key of the live process
        # told when a snapshot takes the kernel's exact key, so that what
        # is kept by key elsewhere (ownership) follows
        self.on_rekey = on_rekey

    def get(self, key: ProcKey | None) -> Process | None:
        return self.processes.get(key) if key else None

    def table_sizes(self) -> dict[str, int]:
        return {"processes": len(self.processes), "running_pids": len(self._running),
                "snapshot_pids": len(self._snapshots)}

    def forget(self, key: ProcKey) -> None:
        proc = self.processes.pop(key, None)
        if proc is None:
            return
        parent = self.processes.get(proc.parent_key) if proc.parent_key else None
        if parent is not None and key in parent.children:
            parent.children.remove(key)
        if self._snapshots.get(key[0]) == key:
            del self._snapshots[key[0]]
        if self._running.get(key[0]) == key:
            del self._running[key[0]]

    def _note_running(self, proc: Process, ktime_ns: int) -> None:
        """`proc` runs now under its pid.  A pid names one process at a time:
        another one we thought running under it is gone, its exit event lost
        (a full ring buffer), and can be forgotten like an exited one."""
        previous = self.processes.get(self._running.get(proc.pid))
        if previous is not None and previous is not proc and previous.exit_ns is None and previous.gone_by_ns is None:
            previous.gone_by_ns = ktime_ns
        self._running[proc.pid] = proc.key

    def _adopt_snapshot(self, key: ProcKey) -> Process | None:
        """The snapshot of this process, re-keyed to the kernel's exact start time."""
        snapshot_key = self._snapshots.get(key[0])
        if snapshot_key is None or abs(snapshot_key[1] - key[1]) > SNAPSHOT_START_TOLERANCE_NS:
            return None
        del self._snapshots[key[0]]
        proc = self.processes.pop(snapshot_key)
        proc.key = key
        self.processes[key] = proc
        for child_key in proc.children:
            child = self.processes.get(child_key)
            if child is not None:
                child.parent_key = key
        parent = self.processes.get(proc.parent_key) if proc.parent_key else None
        if parent is not None:
            parent.children = [key if k == snapshot_key else k for k in parent.children]
        if self.on_rekey is not None:
            self.on_rekey(snapshot_key, key)
        return proc

    def _ensure(self, header: Header) -> Process:
        key = header.process_key
        snapshot = header.type == EventType.PROC_SNAPSHOT
        proc = self.processes.get(key) or (None if snapshot else self._adopt_snapshot(key))
        if proc is None:
            parent_key = header.parent_key if header.ppid else None
            parent = None
            if parent_key is not None:
                parent = self.processes.get(parent_key) or self._adopt_snapshot(parent_key)
                parent_key = parent.key if parent is not None else parent_key
            proc = Process(key, parent_key, first_seen_ns=header.ktime_ns)
            self.processes[key] = proc
            if snapshot:
                self._snapshots[key[0]] = key
            if parent is not None:
                parent.children.append(key)
                proc.inherited = parent.image
        if proc.exit_ns is None:
            self._note_running(proc, header.ktime_ns)
        proc.comm = header.comm
        proc.real_parent_pid = header.ppid
        proc.cgroup_id = header.cgroup_id
        proc.namespaces = header.ns
        proc.last_seen_ns = max(proc.last_seen_ns, header.ktime_ns)
        return proc

    def apply(self, event: Event) -> Process:
        """Updates the tree; returns the process the event is about."""
        header = event.header
        if isinstance(event, ForkEvent):
            parent = self._ensure(header)
            key = event.child_key
            child = self.processes.get(key)
            if child is None:
                child = Process(key, parent.key, first_seen_ns=header.ktime_ns)
                self.processes[key] = child
                parent.children.append(key)
            child.fork_ns = header.ktime_ns
            child.clone_flags_raw = event.clone_flags_raw
            child.inherited = parent.image
            child.comm = parent.comm
            child.last_seen_ns = header.ktime_ns
            self._note_running(child, header.ktime_ns)
            return child
        proc = self._ensure(header)
        if isinstance(event, ExecEvent):
            snapshot = header.type == EventType.PROC_SNAPSHOT
            proc.execs.append(
                Exec(header.ktime_ns, event.filename, event.argv, dict(event.env),
                     event.argv_truncated, from_snapshot=snapshot)
            )
            proc.unwatched |= event.unwatched
            proc.unwatched_causes_raw |= event.unwatched_causes_raw
        elif isinstance(event, ExitEvent):
            proc.unwatched |= event.unwatched
            proc.unwatched_causes_raw |= event.unwatched_causes_raw
            proc.exit_ns = header.ktime_ns
            proc.exit_code_raw = event.exit_code_raw
            if self._running.get(proc.pid) == proc.key:
                del self._running[proc.pid]
        elif isinstance(event, OomKillEvent):
            # The victim is named by pid only; it is alive until its SIGKILL.
            victim = self.get(self._running.get(event.victim_pid))
            if victim is not None:
                victim.oom_kill = event
                return victim
            return proc
        else:
            proc.activity.append(event)
        return proc
