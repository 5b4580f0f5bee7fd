"""Correlation: kernel events and enrichment records to one PodTrace per pod start.

Every process is owned by at most one container id:
- a shim or runc invocation is owned by the id in its argv (`-id`, runc's
  last argument), a CNI plugin by CNI_CONTAINERID;
- any other process inherits its creator's owner at fork, so runc init's
  stages, the container's processes and host-local (run by bridge) follow.

Containers are grouped into pods by the bundle's CRI annotations
(`io.kubernetes.cri.sandbox-id`), and, when a bundle could not be read, by
the pod UID in the cgroup path (`…/pod<uid>/<id>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tracer.events import CgroupEvent, Event, EventType, ExecEvent, ForkEvent
from tracer.procs import Process, ProcessTable, ProcKey
from tracer.runtime import (
    CONTAINERD_BINARIES,
    SHIM_BINARIES,
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

ANNOTATION = "io.kubernetes.cri."
_POD_UID_IN_CGROUP = re.compile(r"pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})")
START_PHASE_RUNC = ("create", "start", "run")
START_PHASE_CNI = ("ADD",)
# Exited processes are kept this long after a pod's export, for late events.
PRUNE_GRACE_NS = 60_000_000_000


@dataclass
class ContainerActivity:
    """What one container id's processes did, as it streams in."""

    container_id: str
    processes: list[ProcKey] = field(default_factory=list)
    bundle: dict | None = None        # enrichment: annotations, cgroups path, resources
    netns: dict | None = None         # enrichment: the sandbox's network namespace
    cgroup_paths: list[str] = field(default_factory=list)
    has_shim_daemon: bool = False
    has_cni: bool = False
    cni_pod: dict[str, str] = field(default_factory=dict)  # K8S_POD_* from CNI_ARGS
    runc_error: str = ""              # enrichment: the last error runc logged (log.json)
    start_pressure: dict[str, int] = field(default_factory=dict)  # enrichment: cgroup stats when it ran

    @property
    def annotations(self) -> dict[str, str]:
        return (self.bundle or {}).get("annotations", {})

    @property
    def is_sandbox(self) -> bool:
        kind = self.annotations.get(ANNOTATION + "container-type")
        if kind:
            return kind == "sandbox"
        # Without the bundle: only a sandbox gets its own shim daemon and CNI.
        return self.has_shim_daemon or self.has_cni

    @property
    def sandbox_id(self) -> str | None:
        if self.is_sandbox:
            return self.container_id
        return self.annotations.get(ANNOTATION + "sandbox-id")

    @property
    def pod_uid(self) -> str | None:
        uid = self.annotations.get(ANNOTATION + "sandbox-uid") or self.cni_pod.get("K8S_POD_UID")
        if uid:
            return uid
        for path in self.cgroup_paths + [(self.bundle or {}).get("cgroups_path", "")]:
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


@dataclass
class _TraceUnit:
    key: str
    sandbox: ContainerActivity
    containers: list[ContainerActivity]
    restart: Restart | None
    other_container_ids: set[str] = field(default_factory=set)

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
        self.table = ProcessTable()
        self.owner: dict[ProcKey, str] = {}
        self.containers: dict[str, ContainerActivity] = {}
        self.stats = CorrelationStats()
        self.lost_windows: list[tuple[int, int]] = []  # (ktime, lost count)
        self.emitted: set[str] = set()  # keys of the traces take_finished handed out
        self.exported_containers: set[str] = set()  # container ids in those traces

    def _container(self, container_id: str) -> ContainerActivity:
        activity = self.containers.get(container_id)
        if activity is None:
            activity = self.containers[container_id] = ContainerActivity(container_id)
        return activity

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
        proc = self.table.apply(event)
        if isinstance(event, ForkEvent):
            # the creator by its table key: a process found running at start
            # keeps its snapshot's key, the kernel's is only an alias
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
            self._own(proc, runc.container_id)
            return
        cni = parse_cni(image)
        if cni is not None and cni.container_id:
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

    def feed_enrichment(self, record: dict) -> None:
        self.stats.enrichment_records += 1
        container_id = record.get("container_id")
        if not container_id:
            return
        activity = self._container(container_id)
        if record.get("type") == "bundle":
            activity.bundle = record
        elif record.get("type") == "netns":
            activity.netns = record
        elif record.get("type") == "runc_log":
            activity.runc_error = record.get("error", "")
        elif record.get("type") == "cgroup_stats":
            activity.start_pressure = dict(record.get("stats") or {})

    def note_lost(self, ktime_ns: int, count: int) -> None:
        if count:
            self.lost_windows.append((ktime_ns, count))

    # ---- building ----------------------------------------------------------

    def _container_trace(self, activity: ContainerActivity) -> ContainerTrace:
        annotations = activity.annotations
        trace = ContainerTrace(
            container_id=activity.container_id,
            is_sandbox=activity.is_sandbox,
            name=annotations.get(ANNOTATION + ("sandbox-name" if activity.is_sandbox else "container-name"), ""),
            image=annotations.get(ANNOTATION + "image-name", ""),
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
        """
        ready = set()
        for unit in self._units():
            if unit.key in self.emitted:
                continue
            first, last = self.start_window(unit.activities)
            if now_ns - last >= quiet_ns or now_ns - first >= max_age_ns:
                ready.add(unit.key)
        pods = self._build(ready.__contains__)
        for pod in pods:
            self.emitted.add(pod.key)
            self.exported_containers.update(c.container_id for c in pod.all_containers)
            if pod.restart is None:
                self.exported_containers.add(pod.sandbox_id)
            first, last = self.start_window([c.activity for c in pod.all_containers])
            if now_ns - last < quiet_ns:
                pod.partial_reasons.append("exported before its start went quiet (max age reached)")
        self.prune(now_ns - PRUNE_GRACE_NS)
        return pods

    def _units(self) -> list[_TraceUnit]:
        """What goes into which trace: a pod's start trace holds its sandbox
        and the first container of each name; any later container of the
        pod (a restart, or a first start after the pod's trace went out)
        gets a trace of its own."""
        sandboxes = {cid: a for cid, a in self.containers.items() if a.is_sandbox and self._started_here(a)}
        by_uid = {a.pod_uid: cid for cid, a in sandboxes.items() if a.pod_uid}
        members: dict[str, list[ContainerActivity]] = {cid: [] for cid in sandboxes}
        for cid, activity in self.containers.items():
            if cid in sandboxes or activity.is_sandbox:
                continue
            sandbox_id = activity.sandbox_id or by_uid.get(activity.pod_uid or "")
            if sandbox_id in members and self._started_here(activity):
                members[sandbox_id].append(activity)
        units = []
        for sandbox_id, sandbox in sandboxes.items():
            pod_exported = sandbox_id in self.emitted
            in_pod: list[ContainerActivity] = []
            later: list[_TraceUnit] = []
            by_name: dict[str, list[ContainerActivity]] = {}
            for activity in sorted(members[sandbox_id], key=self._first_ns):
                name = activity.annotations.get(ANNOTATION + "container-name") or activity.container_id
                earlier = by_name.setdefault(name, [])
                if not earlier and (not pod_exported or activity.container_id in self.exported_containers):
                    in_pod.append(activity)
                else:
                    previous = earlier[-1] if earlier else None
                    restart = Restart(
                        container_name=name if name != activity.container_id else "",
                        attempt=len(earlier),
                        previous_container_id=previous.container_id if previous else "",
                        previous_in_pod_trace=previous is None or previous in in_pod,
                    )
                    later.append(_TraceUnit(activity.container_id, sandbox, [activity], restart))
                earlier.append(activity)
            units.append(_TraceUnit(sandbox_id, sandbox, in_pod, None,
                                    {unit.key for unit in later}))
            units.extend(later)
        return units

    def _build(self, wanted) -> list[PodTrace]:
        units = [unit for unit in self._units() if wanted(unit.key)]
        units.sort(key=lambda unit: self._first_ns(unit.activities[0]))
        return [self._pod_trace(unit) for unit in units]

    def prune(self, before_ns: int) -> None:
        """Forgets processes that exited before `before_ns` and are not part
        of a pod start still to be exported, and containers left empty, so
        that a long-running daemon's memory stays flat."""
        def exported_or_unowned(key: ProcKey) -> bool:
            owner = self.owner.get(key)
            return owner is None or owner in self.exported_containers
        gone = [key for key, proc in self.table.processes.items()
                if proc.exit_ns is not None and proc.exit_ns < before_ns and exported_or_unowned(key)]
        for key in gone:
            self.table.forget(key)
            owner = self.owner.pop(key, None)
            if owner is not None and owner in self.containers:
                self.containers[owner].processes.remove(key)
        for cid in [cid for cid, a in self.containers.items() if not a.processes and cid in self.exported_containers]:
            del self.containers[cid]

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
        """Whether its start (shim start or runc create) happened while tracing."""
        for key in activity.processes:
            proc = self.table.processes[key]
            if role_of(proc) in (Role.SHIM_START, Role.RUNC, Role.CNI_PLUGIN) and proc.seen_from_start:
                return True
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
            name=annotations.get(ANNOTATION + "sandbox-name", "") or cni_pod.get("K8S_POD_NAME", ""),
            namespace=annotations.get(ANNOTATION + "sandbox-namespace", "") or cni_pod.get("K8S_POD_NAMESPACE", ""),
            uid=annotations.get(ANNOTATION + "sandbox-uid", "") or sandbox_activity.pod_uid or "",
            attempt=annotations.get(ANNOTATION + "sandbox-attempt", ""),
            sandbox=sandbox,
            containers=containers,
            restart=unit.restart,
            other_container_ids=frozenset(unit.other_container_ids),
        )
        pod.partial_reasons = self._partial_reasons(pod)
        return pod

    def _partial_reasons(self, pod: PodTrace) -> list[str]:
        reasons = []
        sandbox_bundle = pod.sandbox.activity.bundle
        # A sandbox whose network setup failed never got a bundle.
        unread = (sandbox_bundle is None and pod.sandbox.failed_step != "cni") or (sandbox_bundle or {}).get("error")
        if pod.restart is None and unread:
            reasons.append("sandbox bundle config.json not read")
        for container in pod.containers:
            error = (container.activity.bundle or {}).get("error")
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
        if not pod.name:
            reasons.append("pod name unknown")
        start = min((self.table.processes[k].start_ns for c in pod.all_containers
                     for k in c.activity.processes), default=0)
        end = max((self.table.processes[k].last_seen_ns for c in pod.all_containers
                   for k in c.activity.processes), default=0)
        lost = sum(n for t, n in self.lost_windows if start <= t <= end + 1_000_000_000)
        if lost:
            reasons.append(f"{lost} kernel events lost while this pod started")
        return reasons
