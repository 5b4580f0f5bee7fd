"""Correlation: kernel events and enrichment records to one PodTrace per pod start.

Every process is owned by at most one container id:
- a shim or runc invocation is owned by the id in its argv (`-id`, runc's
  last argument), a CNI plugin by CNI_CONTAINERID;
- any other process inherits its creator's owner at fork, so runc init's
  stages, the container's processes and host-local (run by bridge) follow.

Containers are grouped into pods by the bundle's CRI annotations
(`io.kubernetes.cri.sandbox-id`); when a bundle could not be read, by the
sandbox whose shim daemon ran the container's runc (one shim serves a
pod), and last by the pod UID in the cgroup path (`…/pod<uid>/<id>`).

Containers that already ran when tracing began are *discovered* (their
processes in /proc, their cgroup, their bundle: tracer/enrich/enricher.py): their
pod is known, so that later exits and restarts are told apart and named,
but their start is not traced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tracer.correlate.processes import Process, ProcessTable, ProcKey
from tracer.correlate.records import (
    BundleRecord,
    CgroupStatsRecord,
    DiscoveredRecord,
    EnrichmentRecord,
    NetnsRecord,
    RuncLogRecord,
)
from tracer.correlate.roles import (
    CniCall,
    Role,
    cni_pod_identity,
    container_exec,
    parse_cni,
    parse_runc,
    parse_shim,
    role_of,
    runc_init_stage,
)
from tracer.correlate.runtime_work import RuntimeWork
from tracer.events import CgroupEvent, Event, EventType, ExecEvent, ForkEvent
from tracer.format import unwatched_cause_names
from tracer.runtimes import CONTAINERD_BINARIES, RUNTIME, SHIM_BINARIES

# How close a loss noted (by the capture's poll) must be to a pod's events
# to count for it: losses are read every 0.1 s, and the events around a
# loss reach the pipeline a batch later or earlier.
LOSS_MARGIN_NS = 1_000_000_000
_POD_UID_IN_CGROUP = re.compile(r"pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})")
START_PHASE_RUNC = ("create", "start", "run")
START_PHASE_CNI = ("ADD",)
# Exited processes are kept this long after a pod's export, for events that
# reach the pipeline late: the ring is drained every 10-100 ms and a burst's
# backlog is seconds deep at worst, so 10 s covers both while keeping a busy
# node's process table to its last few seconds of exits.
PRUNE_GRACE_NS = 10_000_000_000
PRUNE_INTERVAL_NS = 1_000_000_000


@dataclass
class ContainerActivity:
    """What one container id's processes did, as it streams in."""

    container_id: str
    processes: list[ProcKey] = field(default_factory=list)
    bundle: BundleRecord | None = None  # enrichment: its bundle's config.json
    netns: NetnsRecord | None = None  # enrichment: the sandbox's network namespace
    cgroup_paths: list[str] = field(default_factory=list)
    has_shim_daemon: bool = False
    has_cni: bool = False
    cni_pod: dict[str, str] = field(default_factory=dict)  # K8S_POD_* from CNI_ARGS
    runc_error: str = ""              # enrichment: the last error runc logged (log.json)
    start_pressure: dict[str, int] = field(default_factory=dict)  # enrichment: cgroup stats when it ran
    discovered: bool = False          # it already ran when tracing began
    start_seen: bool = False          # a step of its start was seen from its beginning (kept once known:
                                      # pruning forgets the steps long before the container)

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.bundle.annotations if self.bundle is not None else {}

    @property
    def is_sandbox(self) -> bool:
        kind = self.annotations.get(RUNTIME.annotation("container-type"))
        if kind:
            return kind == "sandbox"
        # Without the bundle: only a sandbox gets its own shim daemon and CNI.
        return self.has_shim_daemon or self.has_cni

    @property
    def sandbox_id(self) -> str | None:
        if self.is_sandbox:
            return self.container_id
        return self.annotations.get(RUNTIME.annotation("sandbox-id"))

    @property
    def pod_uid(self) -> str | None:
        uid = self.annotations.get(RUNTIME.annotation("sandbox-uid")) or self.cni_pod.get("K8S_POD_UID")
        if uid:
            return uid
        for path in self.cgroup_paths + [self.bundle.cgroups_path if self.bundle is not None else ""]:
            match = _POD_UID_IN_CGROUP.search(path)
            if match:
                return match.group(1).replace("_", "-")
        return None


@dataclass
class CniExec:
    call: CniCall
    process: Process
    delegates: list[Process]          # plugins it ran itself (bridge → host-local)


@dataclass
class ContainerTrace:
    container_id: str
    is_sandbox: bool
    name: str
    image: str
    activity: ContainerActivity
    shim_start: Process | None = None
    shim_daemon: Process | None = None
    cni: list[CniExec] = field(default_factory=list)
    runc_create: Process | None = None
    runc_start: Process | None = None
    init_stages: dict[int, Process] = field(default_factory=dict)
    process: Process | None = None    # the entrypoint's process
    missing: list[str] = field(default_factory=list)
    failed_step: str | None = None    # the step of the start that failed, if one did

    @property
    def started(self) -> bool:
        return self.process is not None and container_exec(self.process) is not None


# The steps of a container start, in order.
_STEP_ORDER = ("cni", "runc create", "runc init", "runc start", "container process")


def _failed(proc: Process | None) -> bool:
    return proc is not None and proc.exit_code_raw is not None and proc.exit_code_raw != 0


def _failed_step(trace: ContainerTrace) -> str | None:
    """The first step of the start that failed: a CNI plugin or runc that
    exited non-zero, or runc init's last stage exiting without ever
    executing the entrypoint."""
    if any(_failed(cni.process) for cni in trace.cni):
        return "cni"
    if _failed(trace.runc_create):
        return "runc create"
    last_stage = trace.init_stages.get(2)
    if trace.process is None and last_stage is not None and last_stage.exit_ns is not None:
        return "runc init"
    if _failed(trace.runc_start):
        return "runc start"
    return None


@dataclass(frozen=True)
class Restart:
    """A container start in a pod whose start trace is another trace."""

    container_name: str
    attempt: int                      # how many containers of this name the pod ran before
    previous_container_id: str        # "" when this is the first of its name
    previous_in_pod_trace: bool       # the previous attempt's trace is the pod's start trace
    previous_exit_code_raw: int | None = None  # how the previous attempt's main process ended, if seen


@dataclass
class _TraceUnit:
    key: str
    sandbox: ContainerActivity
    containers: list[ContainerActivity]
    restart: Restart | None
    other_container_ids: set[str] = field(default_factory=set)
    partial_reasons: list[str] = field(default_factory=list)

    @property
    def activities(self) -> list[ContainerActivity]:
        return self.containers if self.restart is not None else [self.sandbox, *self.containers]


@dataclass
class PodTrace:
    sandbox_id: str
    name: str
    namespace: str
    uid: str
    attempt: str
    sandbox: ContainerTrace
    containers: list[ContainerTrace]  # app containers, in start order
    partial_reasons: list[str] = field(default_factory=list)
    restart: Restart | None = None    # set: a later container start, not the pod's start
    other_container_ids: frozenset[str] = frozenset()  # the pod's containers shown in other traces

    @property
    def key(self) -> str:
        """The trace's identity: the sandbox id for a pod start, the
        container id for a later container start."""
        return self.sandbox_id if self.restart is None else self.containers[0].container_id

    @property
    def all_containers(self) -> list[ContainerTrace]:
        """The containers whose start this trace shows."""
        return [self.sandbox, *self.containers] if self.restart is None else list(self.containers)


@dataclass
class CorrelationStats:
    events: int = 0
    enrichment_records: int = 0
    unowned_events: int = 0
    impostors: int = 0                # shim/runc execs not started by the runtime: ignored


class PodAssembler:
    """Feeds on events in time order; builds PodTraces on demand."""

    def __init__(self) -> None:
        self.table = ProcessTable(on_rekey=self._rekeyed)
        self.owner: dict[ProcKey, str] = {}
        self.containers: dict[str, ContainerActivity] = {}
        self.stats = CorrelationStats()
        self.lost_windows: list[tuple[int, int]] = []  # (ktime, lost count)
        self.emitted: set[str] = set()  # keys of the traces take_finished handed out
        self.exported_containers: set[str] = set()  # container ids in those traces
        self.runtime_work = RuntimeWork()  # runc commands and CNI calls, for the CRI layer
        # take_finished runs every 0.2 s in the daemon: what it works out from
        # the events is kept until an event (or an export, a prune) changes it
        self._generation = 0
        self._waiting: tuple[int, list[_TraceUnit], list[tuple[_TraceUnit, int, int]]] | None = None
        self.pruned_at_ns = 0  # take_finished's last prune (the pipeline forgets its own tables with it)
        # per process, whether it is a start step, as of how many execs
        self._start_steps: dict[ProcKey, tuple[int, bool]] = {}

    def _container(self, container_id: str) -> ContainerActivity:
        activity = self.containers.get(container_id)
        if activity is None:
            activity = self.containers[container_id] = ContainerActivity(container_id)
        return activity

    def _rekeyed(self, old: ProcKey, new: ProcKey) -> None:
        """A process found running at start got the kernel's exact key."""
        self._start_steps.pop(old, None)
        owner = self.owner.pop(old, None)
        if owner is not None:
            self.owner[new] = owner
            processes = self.containers[owner].processes
            processes[processes.index(old)] = new

    def _own(self, proc: Process, container_id: str | None) -> None:
        if not container_id:
            return
        previous = self.owner.get(proc.key)
        if previous == container_id:
            return
        if previous is not None:
            self.containers[previous].processes.remove(proc.key)
        self.owner[proc.key] = container_id
        self._container(container_id).processes.append(proc.key)

    def feed(self, event: Event) -> None:
        self.stats.events += 1
        self._generation += 1
        proc = self.table.apply(event)
        if isinstance(event, ForkEvent):
            # the creator as the table knows it now (a process found running
            # at start was re-keyed to the kernel's exact start by its event)
            creator = self.table.get(event.header.process_key)
            self._own(proc, self.owner.get(creator.key) if creator is not None else None)
            return
        if isinstance(event, ExecEvent):
            self._classify_exec(proc, event)
            return
        container_id = self.owner.get(proc.key)
        if container_id is None:
            if proc.parent_key in self.owner:  # first seen now; its parent is known
                self._own(proc, self.owner[proc.parent_key])
                container_id = self.owner[proc.key]
            else:
                self.stats.unowned_events += 1
                return
        if isinstance(event, CgroupEvent) and event.header.type == EventType.CGROUP_MKDIR:
            self.containers[container_id].cgroup_paths.append(event.path)

    def _classify_exec(self, proc: Process, event: ExecEvent) -> None:
        image = proc.image
        assert image is not None
        shim = parse_shim(image)
        runc = parse_runc(image)
        if (shim is not None or (runc is not None and runc.subcommand != "init")) and not self._launched_by_runtime(proc):
            # a program named like the runtime, run by someone else: its argv
            # must not put its spans into a real container's trace
            self.stats.impostors += 1
            return
        if shim is not None:
            self._own(proc, shim.container_id)
            if shim.action == "daemon":
                self._container(shim.container_id).has_shim_daemon = True
            return
        if runc is not None and runc.container_id and runc.subcommand != "init":
            self.runtime_work.note(event.header.ktime_ns, "runc", runc.subcommand, runc.container_id)
            self._own(proc, runc.container_id)
            return
        cni = parse_cni(image)
        if cni is not None and cni.container_id:
            self.runtime_work.note(event.header.ktime_ns, "cni", cni.command, cni.container_id)
            self._own(proc, cni.container_id)
            if cni.command in START_PHASE_CNI:
                activity = self._container(cni.container_id)
                activity.has_cni = True
                activity.cni_pod = activity.cni_pod or cni_pod_identity(image)
            return
        if proc.key not in self.owner and proc.parent_key in self.owner:
            self._own(proc, self.owner[proc.parent_key])

    def _launched_by_runtime(self, proc: Process) -> bool:
        """Whether a shim or runc was started by containerd or a shim, as the
        runtime starts them (a parent the tracer never saw gets the benefit
        of the doubt)."""
        parent = self.table.get(proc.parent_key)
        if parent is None or parent.image is None:
            return True
        return parent.image.basename in CONTAINERD_BINARIES + SHIM_BINARIES

    def feed_enrichment(self, record: EnrichmentRecord) -> None:
        self.stats.enrichment_records += 1
        self._generation += 1
        container_id = getattr(record, "container_id", "")
        if not container_id:
            return
        activity = self._container(container_id)
        match record:
            case BundleRecord():
                activity.bundle = record
            case NetnsRecord():
                activity.netns = record
            case RuncLogRecord():
                activity.runc_error = record.error
            case CgroupStatsRecord():
                activity.start_pressure = dict(record.stats)
            case DiscoveredRecord():
                # a process found running at start, in this container's cgroup:
                # its parent (the pod's shim) said nothing about which container
                activity.discovered = True
                if record.cgroup_path and record.cgroup_path not in activity.cgroup_paths:
                    activity.cgroup_paths.append(record.cgroup_path)
                proc = self.table.get((record.pid, record.start_ns))
                if proc is not None:
                    self._own(proc, container_id)

    def note_lost(self, ktime_ns: int, count: int) -> None:
        if count:
            self.lost_windows.append((ktime_ns, count))

    # ---- building ----------------------------------------------------------

    def _container_trace(self, activity: ContainerActivity) -> ContainerTrace:
        annotations = activity.annotations
        trace = ContainerTrace(
            container_id=activity.container_id,
            is_sandbox=activity.is_sandbox,
            name=annotations.get(RUNTIME.annotation("sandbox-name" if activity.is_sandbox else "container-name"), ""),
            image=annotations.get(RUNTIME.annotation("image-name"), ""),
            activity=activity,
        )
        cni_by_key: dict[ProcKey, CniExec] = {}
        for key in activity.processes:
            proc = self.table.processes[key]
            role = role_of(proc)
            image = proc.image
            if role is Role.SHIM_START and trace.shim_start is None:
                trace.shim_start = proc
            elif role is Role.SHIM_DAEMON and trace.shim_daemon is None:
                trace.shim_daemon = proc
            elif role is Role.RUNC and image is not None:
                call = parse_runc(image)
                if call and call.subcommand == "create" and trace.runc_create is None:
                    trace.runc_create = proc
                elif call and call.subcommand == "start" and trace.runc_start is None:
                    trace.runc_start = proc
            elif role is Role.CNI_PLUGIN and image is not None:
                call = parse_cni(image)
                if call is None or call.command not in START_PHASE_CNI:
                    continue
                parent_cni = cni_by_key.get(proc.parent_key) if proc.parent_key else None
                if parent_cni is not None:
                    parent_cni.delegates.append(proc)
                else:
                    cni_by_key[key] = CniExec(call, proc, [])
                    trace.cni.append(cni_by_key[key])
            elif role in (Role.RUNC_INIT, Role.CONTAINER):
                stage = runc_init_stage(proc, self.table)
                if stage is not None and stage not in trace.init_stages:
                    trace.init_stages[stage] = proc
                if role is Role.CONTAINER and trace.process is None:
                    trace.process = proc
        trace.failed_step = _failed_step(trace)
        # Steps after a failed one never happen: they are not missing.
        for piece, present in (("runc create", trace.runc_create), ("runc start", trace.runc_start),
                               ("container process", trace.process)):
            if piece == trace.failed_step or (trace.failed_step and _STEP_ORDER.index(piece) >
                                              _STEP_ORDER.index(trace.failed_step)):
                break
            if present is None:
                trace.missing.append(piece)
        return trace

    def build(self) -> list[PodTrace]:
        """Every pod start seen, and every container start after it (a
        restart), in the order they began."""
        return self._build(lambda key: True)

    def take_finished(self, now_ns: int, quiet_ns: int, max_age_ns: int) -> list[PodTrace]:
        """Pod starts and container restarts that are over, each returned
        once (for daemon mode).

        A start is over when nothing of it (runtime calls, runc stages, an
        entrypoint exec or exit) has happened for `quiet_ns`, which still
        catches a crash right after start; or, for a start that keeps
        going, `max_age_ns` after it began (then marked partial).
        Then forgets what no trace still to be exported needs.
        """
        if self._waiting is None or self._waiting[0] != self._generation:
            units = self._units()
            self._waiting = (self._generation, units, [(unit, *self.start_window(unit.activities))
                                                        for unit in units if self._to_export(unit)])
        _, units, waiting = self._waiting
        ready = [unit for unit, first, last in waiting if now_ns - last >= quiet_ns or now_ns - first >= max_age_ns]
        ready.sort(key=lambda unit: self._first_ns(unit.activities[0]))
        pods = [self._pod_trace(unit) for unit in ready]
        for pod in pods:
            self.emitted.add(pod.key)
            self.exported_containers.update(c.container_id for c in pod.all_containers)
            if pod.restart is None:
                self.exported_containers.add(pod.sandbox_id)
            first, last = self.start_window([c.activity for c in pod.all_containers])
            if now_ns - last < quiet_ns:
                pod.partial_reasons.append("exported before its start went quiet (max age reached)")
        if pods:
            self._generation += 1
            units = self._units()
        # what prune forgets only grows with time: once a second is enough
        if pods or now_ns - self.pruned_at_ns >= PRUNE_INTERVAL_NS:
            self.pruned_at_ns = now_ns
            # the traces handed out now are built after this: their processes stay
            # until the next prune
            handed_out = {c.container_id for pod in pods for c in pod.all_containers} | \
                {pod.sandbox_id for pod in pods}
            self.prune(now_ns - PRUNE_GRACE_NS, self._pending_containers(units) | handed_out)
        # a start still to be exported began at most max_age ago
        self.lost_windows = [(t, n) for t, n in self.lost_windows if t >= now_ns - max_age_ns - LOSS_MARGIN_NS]
        return pods

    def _to_export(self, unit: _TraceUnit) -> bool:
        """Not handed out yet: neither the trace, nor (for a later container
        start) its container within another trace."""
        if unit.key in self.emitted:
            return False
        return unit.restart is None or unit.key not in self.exported_containers

    def _pending_containers(self, units: list[_TraceUnit]) -> set[str]:
        """The containers (and their sandboxes) of traces not yet handed out."""
        return {a.container_id for unit in units if self._to_export(unit)
                for a in (unit.sandbox, *unit.containers)}

    def _units(self) -> list[_TraceUnit]:
        """What goes into which trace: a pod's start trace holds its sandbox
        and the first container of each name; any later container of the
        pod (a restart, or a first start after the pod's trace went out)
        gets a trace of its own.  So does every container started in a pod
        whose own start was not seen (it already ran when tracing began):
        marked partial when it is the first of its name, which makes it the
        rest of a pod start that began before tracing."""
        sandboxes = {cid: a for cid, a in self.containers.items() if a.is_sandbox}
        members: dict[str, list[ContainerActivity]] = {cid: [] for cid in sandboxes}
        for cid, activity in self.containers.items():
            if activity.is_sandbox:
                continue
            sandbox_id = self._sandbox_of(activity, sandboxes)
            if sandbox_id in members:
                members[sandbox_id].append(activity)
        units = []
        for sandbox_id, sandbox in sandboxes.items():
            start_seen = self._started_here(sandbox)
            pod_exported = sandbox_id in self.emitted
            in_pod: list[ContainerActivity] = []
            later: list[_TraceUnit] = []
            by_name: dict[str, list[ContainerActivity]] = {}
            for activity in sorted(members[sandbox_id], key=self._first_ns):
                name = activity.annotations.get(RUNTIME.annotation("container-name")) or activity.container_id
                earlier = by_name.setdefault(name, [])
                started = self._started_here(activity)
                if started and start_seen and not earlier and (
                        not pod_exported or activity.container_id in self.exported_containers):
                    in_pod.append(activity)
                elif started:
                    previous = earlier[-1] if earlier else None
                    restart = Restart(
                        container_name=name if name != activity.container_id else "",
                        attempt=len(earlier),
                        previous_container_id=previous.container_id if previous else "",
                        # a container found running: its own trace, if any, is unknown
                        previous_in_pod_trace=previous is None or previous in in_pod or previous.discovered,
                        previous_exit_code_raw=self._main_exit_code(previous),
                    )
                    unit = _TraceUnit(activity.container_id, sandbox, [activity], restart)
                    if not start_seen and not earlier:
                        unit.partial_reasons.append(
                            f"the pod's start began before tracing (sandbox {sandbox_id[:12]} was already there)")
                    later.append(unit)
                earlier.append(activity)
            if start_seen:
                units.append(_TraceUnit(sandbox_id, sandbox, in_pod, None, {unit.key for unit in later}))
            units.extend(later)
        return units

    def _sandbox_of(self, activity: ContainerActivity, sandboxes: dict[str, ContainerActivity]) -> str | None:
        """The sandbox of an app container: named by its bundle; else the
        one whose shim daemon ran its runc (a pod has one shim); else the
        sandbox with its pod UID, the latest begun before it when the pod
        had several sandbox attempts."""
        if activity.sandbox_id:
            return activity.sandbox_id
        for key in activity.processes:
            parent = self.table.get(self.table.processes[key].parent_key)
            if parent is not None and role_of(parent) is Role.SHIM_DAEMON and self.owner.get(parent.key) in sandboxes:
                return self.owner[parent.key]
        uid = activity.pod_uid
        if not uid:
            return None
        first = self._first_ns(activity)
        candidates = [cid for cid, s in sandboxes.items() if s.pod_uid == uid and self._first_ns(s) <= first]
        return max(candidates, key=lambda cid: self._first_ns(sandboxes[cid]), default=None)

    def _main_exit_code(self, activity: ContainerActivity | None) -> int | None:
        """How a container's main process ended (a wait status), if seen: its
        entrypoint's process, or, for a container found running, the first
        of its processes (the one runc started)."""
        if activity is None:
            return None
        procs = [self.table.processes[key] for key in activity.processes]
        main = next((p for p in procs if role_of(p) is Role.CONTAINER), None)
        if main is None:
            found = [p for p in procs if p.execs and p.execs[0].from_snapshot]
            main = min(found, key=lambda p: p.start_ns, default=None)
        return main.exit_code_raw if main is not None else None

    def _build(self, wanted) -> list[PodTrace]:
        units = [unit for unit in self._units() if wanted(unit.key)]
        units.sort(key=lambda unit: self._first_ns(unit.activities[0]))
        return [self._pod_trace(unit) for unit in units]

    def prune(self, before_ns: int, pending: set[str] | None = None) -> None:
        """Forgets what no trace still to be exported needs, so that a
        long-running daemon's memory stays flat: processes that exited
        before `before_ns`, unless they belong to a container of a pending
        trace (`pending`, by default worked out here), then containers left
        without processes.  A container that is forgotten and shows up
        again (its teardown, much later) starts afresh and, having no start
        of its own, is in no trace."""
        if pending is None:
            pending = self._pending_containers(self._units())
        def ended(proc: Process) -> int | None:
            return proc.exit_ns if proc.exit_ns is not None else proc.gone_by_ns
        gone = [key for key, proc in self.table.processes.items()
                if (end := ended(proc)) is not None and end < before_ns and self.owner.get(key) not in pending]
        if gone:
            self._generation += 1
        for key in gone:
            self.table.forget(key)
            self._start_steps.pop(key, None)
            owner = self.owner.pop(key, None)
            if owner is not None and owner in self.containers:
                self.containers[owner].processes.remove(key)
        for cid in [cid for cid, a in self.containers.items() if not a.processes and cid not in pending]:
            self._generation += 1
            del self.containers[cid]
            self.emitted.discard(cid)
            self.exported_containers.discard(cid)

    def table_sizes(self) -> dict[str, int]:
        """How much the assembler holds (a long-running daemon's must stay flat)."""
        return {**self.table.table_sizes(), "process_owners": len(self.owner),
                "containers": len(self.containers), "emitted_traces": len(self.emitted),
                "exported_containers": len(self.exported_containers), "loss_windows": len(self.lost_windows),
                "runtime_work": len(self.runtime_work)}

    def start_window(self, activities: list[ContainerActivity]) -> tuple[int, int]:
        """First and last moment of the containers' start activity: not of
        their workload, nor of later runtime work on them (`runc exec` for
        probes, `runc delete`), which the long-lived shim daemon runs too."""
        times = []
        for activity in activities:
            for key in activity.processes:
                proc = self.table.processes[key]
                role = role_of(proc)
                if role is Role.SHIM_DAEMON:
                    times.append(proc.start_ns)  # it lives as long as the pod
                elif role in (Role.CONTAINER, Role.RUNC_INIT):
                    if not self._launched_by_start(proc):
                        continue
                    entry = container_exec(proc)
                    times.append(entry.ktime_ns if entry else proc.start_ns)
                    if proc.exit_ns is not None:
                        times.append(proc.exit_ns)
                elif role is Role.RUNC:
                    call = parse_runc(proc.image) if proc.image else None
                    if call is not None and call.subcommand in START_PHASE_RUNC:
                        times.extend([proc.start_ns, proc.exit_ns or proc.last_seen_ns])
                elif role is Role.CNI_PLUGIN:
                    call = parse_cni(proc.image) if proc.image else None
                    if call is not None and call.command in START_PHASE_CNI:
                        times.extend([proc.start_ns, proc.exit_ns or proc.last_seen_ns])
                elif role is not Role.OTHER:
                    times.extend([proc.start_ns, proc.exit_ns or proc.last_seen_ns])
        return (min(times), max(times)) if times else (0, 0)

    def _launched_by_start(self, proc: Process) -> bool:
        """Whether a runc init stage (or the process it became) comes from
        `runc create`/`run`, rather than from `runc exec`."""
        current: Process | None = proc
        for _ in range(4):  # stage 2 → stage 1 → stage 0 → runc
            current = self.table.get(current.parent_key) if current is not None else None
            if current is None:
                return True  # its creator is gone from the table: count it
            call = parse_runc(current.image) if current.image is not None else None
            if call is not None and call.subcommand != "init":
                return call.subcommand in START_PHASE_RUNC
        return True

    def _started_here(self, activity: ContainerActivity) -> bool:
        """Whether its start (shim start, runc create or start, CNI ADD)
        happened while tracing; teardown (runc delete, CNI DEL) is no start."""
        if not activity.start_seen:
            activity.start_seen = any(self._is_start_step(key) for key in activity.processes)
        return activity.start_seen

    def _is_start_step(self, key: ProcKey) -> bool:
        """_start_step of a process, worked out again only after a new exec."""
        proc = self.table.processes[key]
        known = self._start_steps.get(key)
        if known is None or known[0] != len(proc.execs):
            known = self._start_steps[key] = (len(proc.execs), self._start_step(proc))
        return known[1]

    @staticmethod
    def _start_step(proc: Process) -> bool:
        if not proc.seen_from_start or proc.image is None:
            return False
        role = role_of(proc)
        if role is Role.SHIM_START:
            return True
        if role is Role.RUNC:
            call = parse_runc(proc.image)
            return call is not None and call.subcommand in START_PHASE_RUNC
        if role is Role.CNI_PLUGIN:
            call = parse_cni(proc.image)
            return call is not None and call.command in START_PHASE_CNI
        return False

    def _first_ns(self, activity: ContainerActivity) -> int:
        return min((self.table.processes[k].start_ns for k in activity.processes), default=0)

    def _pod_trace(self, unit: _TraceUnit) -> PodTrace:
        sandbox_activity = unit.sandbox
        sandbox = self._container_trace(sandbox_activity)
        containers = sorted((self._container_trace(a) for a in unit.containers),
                            key=lambda c: self._first_ns(c.activity))
        annotations = sandbox_activity.annotations
        cni_pod = sandbox_activity.cni_pod
        pod = PodTrace(
            sandbox_id=sandbox_activity.container_id,
            name=annotations.get(RUNTIME.annotation("sandbox-name"), "") or cni_pod.get("K8S_POD_NAME", ""),
            namespace=annotations.get(RUNTIME.annotation("sandbox-namespace"), "") or cni_pod.get("K8S_POD_NAMESPACE", ""),
            uid=annotations.get(RUNTIME.annotation("sandbox-uid"), "") or sandbox_activity.pod_uid or "",
            attempt=annotations.get(RUNTIME.annotation("sandbox-attempt"), ""),
            sandbox=sandbox,
            containers=containers,
            restart=unit.restart,
            other_container_ids=frozenset(unit.other_container_ids),
        )
        pod.partial_reasons = unit.partial_reasons + self._partial_reasons(pod)
        return pod

    def _partial_reasons(self, pod: PodTrace) -> list[str]:
        reasons = []
        sandbox_bundle = pod.sandbox.activity.bundle
        # A sandbox whose network setup failed never got a bundle.
        unread = (sandbox_bundle is None and pod.sandbox.failed_step != "cni") or (
            sandbox_bundle is not None and sandbox_bundle.error)
        if pod.restart is None and unread:
            reasons.append("sandbox bundle config.json not read")
        for container in pod.containers:
            error = container.activity.bundle.error if container.activity.bundle is not None else None
            # containerd deletes the bundle of a container whose start failed,
            # or whose process exited, within milliseconds (before a busy
            # tracer reads it): its name and image then come from CRI
            gone = container.failed_step is not None or (container.process is not None
                                                         and container.process.exit_ns is not None)
            if (container.activity.bundle is None or error) and not gone:
                reasons.append(f"{container.container_id[:12]}: bundle config.json not read ({error or 'not seen'})")
        for container in pod.all_containers:
            for piece in container.missing:
                reasons.append(f"{container.container_id[:12]}: no {piece} seen")
            for key in container.activity.processes:
                proc = self.table.processes[key]
                if not proc.seen_from_start and role_of(proc) is not Role.SHIM_DAEMON:
                    reasons.append(f"{container.container_id[:12]}: pid {proc.pid} started before tracing")
                    break
            unwatched = sorted((proc.pid, unwatched_cause_names(proc.unwatched_causes_raw))
                               for key in container.activity.processes
                               if (proc := self.table.processes[key]).unwatched)
            if unwatched:
                pids = ", ".join(f"{pid} ({', '.join(causes)})" if causes else str(pid) for pid, causes in unwatched)
                reasons.append(f"{container.container_id[:12]}: pid {pids} ran before the syscall program was "
                               "attached (its namespace, mount, cgroup-write or failed-exec events may be missing)")
        if not pod.name:
            reasons.append("pod name unknown")
        start = min((self.table.processes[k].start_ns for c in pod.all_containers
                     for k in c.activity.processes), default=0)
        end = max((self.table.processes[k].last_seen_ns for c in pod.all_containers
                   for k in c.activity.processes), default=0)
        lost = sum(n for t, n in self.lost_windows if start - LOSS_MARGIN_NS <= t <= end + LOSS_MARGIN_NS)
        if lost:
            reasons.append(f"{lost} kernel events lost while this pod started")
        return reasons
