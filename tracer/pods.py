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
    CniCall,
    Role,
    RuncCall,
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
        uid = self.annotations.get(ANNOTATION + "sandbox-uid")
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

    @property
    def started(self) -> bool:
        return self.process is not None and container_exec(self.process) is not None


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

    @property
    def all_containers(self) -> list[ContainerTrace]:
        return [self.sandbox, *self.containers]


@dataclass
class CorrelationStats:
    events: int = 0
    enrichment_records: int = 0
    unowned_events: int = 0


class PodAssembler:
    """Feeds on events in time order; builds PodTraces on demand."""

    def __init__(self) -> None:
        self.table = ProcessTable()
        self.owner: dict[ProcKey, str] = {}
        self.containers: dict[str, ContainerActivity] = {}
        self.stats = CorrelationStats()
        self.lost_windows: list[tuple[int, int]] = []  # (ktime, lost count)
        self.emitted: set[str] = set()  # sandbox ids already handed out by take_finished

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
            creator = self.owner.get(event.header.process_key)
            self._own(proc, creator)
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
        if shim is not None:
            self._own(proc, shim.container_id)
            if shim.action == "daemon":
                self._container(shim.container_id).has_shim_daemon = True
            return
        runc = parse_runc(image)
        if runc is not None and runc.container_id and runc.subcommand != "init":
            self._own(proc, runc.container_id)
            return
        cni = parse_cni(image)
        if cni is not None and cni.container_id:
            self._own(proc, cni.container_id)
            if cni.command in START_PHASE_CNI:
                self._container(cni.container_id).has_cni = True
            return
        if proc.key not in self.owner and proc.parent_key in self.owner:
            self._own(proc, self.owner[proc.parent_key])

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
        for piece, present in (("runc create", trace.runc_create), ("runc start", trace.runc_start),
                               ("container process", trace.process)):
            if present is None:
                trace.missing.append(piece)
        return trace

    def build(self) -> list[PodTrace]:
        """Every pod whose sandbox was seen starting, sandbox first."""
        return self._build(lambda sandbox_id: True)

    def take_finished(self, now_ns: int, quiet_ns: int, max_age_ns: int) -> list[PodTrace]:
        """Pods whose start is over, each returned once (for daemon mode).

        A start is over when nothing of it (runtime calls, runc stages, an
        entrypoint exec or exit) has happened for `quiet_ns`, which still
        catches a crash right after start; or, for a start that keeps
        going, `max_age_ns` after it began (then marked partial).
        """
        members: dict[str, list[ContainerActivity]] = {}
        for activity in self.containers.values():
            if activity.sandbox_id and activity.sandbox_id not in self.emitted:
                members.setdefault(activity.sandbox_id, []).append(activity)
        ready = set()
        for sandbox_id, activities in members.items():
            if sandbox_id not in self.containers or not self.containers[sandbox_id].is_sandbox:
                continue
            first, last = self.start_window(activities)
            if now_ns - last >= quiet_ns or now_ns - first >= max_age_ns:
                ready.add(sandbox_id)
        pods = self._build(ready.__contains__)
        for pod in pods:
            self.emitted.add(pod.sandbox_id)
            first, last = self.start_window([c.activity for c in pod.all_containers])
            if now_ns - last < quiet_ns:
                pod.partial_reasons.append("exported before its start went quiet (max age reached)")
        self.prune(now_ns - PRUNE_GRACE_NS)
        return pods

    def prune(self, before_ns: int) -> None:
        """Forgets processes that exited before `before_ns` and are not part
        of a pod start still to be exported, and containers left empty, so
        that a long-running daemon's memory stays flat."""
        def exported_or_unowned(key: ProcKey) -> bool:
            owner = self.owner.get(key)
            if owner is None:
                return True
            sandbox = self.containers[owner].sandbox_id if owner in self.containers else None
            return sandbox in self.emitted
        gone = [key for key, proc in self.table.processes.items()
                if proc.exit_ns is not None and proc.exit_ns < before_ns and exported_or_unowned(key)]
        for key in gone:
            self.table.forget(key)
            owner = self.owner.pop(key, None)
            if owner is not None and owner in self.containers:
                self.containers[owner].processes.remove(key)
        for cid in [cid for cid, a in self.containers.items() if not a.processes and a.sandbox_id in self.emitted]:
            del self.containers[cid]

    def start_window(self, activities: list[ContainerActivity]) -> tuple[int, int]:
        """First and last moment of the pods' start activity (not of its workload)."""
        times = []
        for activity in activities:
            for key in activity.processes:
                proc = self.table.processes[key]
                role = role_of(proc)
                if role is Role.CONTAINER:
                    entry = container_exec(proc)
                    times.append(entry.ktime_ns if entry else proc.start_ns)
                    if proc.exit_ns is not None:
                        times.append(proc.exit_ns)
                elif role is not Role.OTHER:
                    times.extend([proc.start_ns, proc.exit_ns or proc.last_seen_ns])
        return (min(times), max(times)) if times else (0, 0)

    def _build(self, wanted) -> list[PodTrace]:
        sandboxes = {cid: a for cid, a in self.containers.items()
                     if a.is_sandbox and wanted(cid) and self._started_here(a)}
        by_uid = {a.pod_uid: cid for cid, a in sandboxes.items() if a.pod_uid}
        members: dict[str, list[ContainerActivity]] = {cid: [] for cid in sandboxes}
        for cid, activity in self.containers.items():
            if cid in sandboxes or activity.is_sandbox:
                continue
            sandbox_id = activity.sandbox_id or by_uid.get(activity.pod_uid or "")
            if sandbox_id in members and self._started_here(activity):
                members[sandbox_id].append(activity)
        pods = []
        for sandbox_id, sandbox_activity in sandboxes.items():
            pods.append(self._pod_trace(sandbox_activity, members[sandbox_id]))
        pods.sort(key=lambda p: self._first_ns(p.sandbox.activity))
        return pods

    def _started_here(self, activity: ContainerActivity) -> bool:
        """Whether its start (shim start or runc create) happened while tracing."""
        for key in activity.processes:
            proc = self.table.processes[key]
            if role_of(proc) in (Role.SHIM_START, Role.RUNC, Role.CNI_PLUGIN) and proc.seen_from_start:
                return True
        return False

    def _first_ns(self, activity: ContainerActivity) -> int:
        return min((self.table.processes[k].start_ns for k in activity.processes), default=0)

    def _pod_trace(self, sandbox_activity: ContainerActivity, members: list[ContainerActivity]) -> PodTrace:
        sandbox = self._container_trace(sandbox_activity)
        containers = sorted((self._container_trace(a) for a in members),
                            key=lambda c: self._first_ns(c.activity))
        annotations = sandbox_activity.annotations
        pod = PodTrace(
            sandbox_id=sandbox_activity.container_id,
            name=annotations.get(ANNOTATION + "sandbox-name", ""),
            namespace=annotations.get(ANNOTATION + "sandbox-namespace", ""),
            uid=annotations.get(ANNOTATION + "sandbox-uid", "") or sandbox_activity.pod_uid or "",
            attempt=annotations.get(ANNOTATION + "sandbox-attempt", ""),
            sandbox=sandbox,
            containers=containers,
        )
        pod.partial_reasons = self._partial_reasons(pod)
        return pod

    def _partial_reasons(self, pod: PodTrace) -> list[str]:
        reasons = []
        sandbox_bundle = pod.sandbox.activity.bundle
        if sandbox_bundle is None or sandbox_bundle.get("error"):
            reasons.append("sandbox bundle config.json not read")
        for container in pod.containers:
            error = (container.activity.bundle or {}).get("error")
            if container.activity.bundle is None or error:
                reasons.append(f"{container.container_id[:12]}: bundle config.json not read ({error or 'not seen'})")
        for container in pod.all_containers:
            for piece in container.missing:
                reasons.append(f"{container.container_id[:12]}: no {piece} seen")
            for key in container.activity.processes:
                proc = self.table.processes[key]
                if not proc.seen_from_start and role_of(proc) is not Role.SHIM_DAEMON:
                    reasons.append(f"{container.container_id[:12]}: pid {proc.pid} started before tracing")
                    break
        if sandbox_bundle and not pod.name:
            reasons.append("pod name unknown")
        start = min((self.table.processes[k].start_ns for c in pod.all_containers
                     for k in c.activity.processes), default=0)
        end = max((self.table.processes[k].last_seen_ns for c in pod.all_containers
                   for k in c.activity.processes), default=0)
        lost = sum(n for t, n in self.lost_windows if start <= t <= end + 1_000_000_000)
        if lost:
            reasons.append(f"{lost} kernel events lost while this pod started")
        return reasons
