"""PodTrace to spans: names, attributes and wall-clock times.

Span names are a public interface (people search for them); see
docs/span-model.md.  Each layer is its own service so that Jaeger colours
them apart.  Kernel times become wall time here and nowhere else.

Trace and span ids are derived from the sandbox id, so re-exporting the
same pod start (a replay, a restart of the tracer) never duplicates it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tracer.correlate.pods import ContainerTrace, PodTrace
from tracer.correlate.processes import Activity, Exec, Process, ProcKey
from tracer.correlate.roles import container_exec, parse_runc
from tracer.cri.calls import PairedCall, image_annotations, pod_keys
from tracer.events import (
    CgroupEvent,
    CgroupWriteEvent,
    EventType,
    ExecFailedEvent,
    MountEvent,
    NamespaceEvent,
    NamespaceSyscall,
    PivotRootEvent,
)
from tracer.format import (
    Clock,
    cgroup_fs_name,
    clone_flag_names,
    errno_text,
    exit_status,
    namespace_names,
)
from tracer.spans.diagnosis import LAYER_CONTAINER, Finding, diagnose, runtime_stop_began
from tracer.spans.model import (
    SERVICE_CNI,
    SERVICE_CONTAINER,
    SERVICE_CONTAINERD,
    SERVICE_RUNC,
    SERVICE_SHIM,
    SERVICE_TRACER,
    SHORT_ID,
    Span,
    SpanEvent,
    SpanLink,
    Trace,
    pod_title,
)

CONTAINER_RUNTIME = "containerd"
ROOT_POD_START = "pod start"              # the root of a pod start's trace
ROOT_CONTAINER_START = "container start"  # … of a later container start's (a restart)
STAGE_NAMES = {0: "runc:[0:PARENT]", 1: "runc:[1:CHILD]", 2: "runc:[2:INIT]"}


def trace_id_for(sandbox_id: str) -> str:
    """A pod start's trace id."""
    return hashlib.sha256(f"tracer/pod-start/{sandbox_id}".encode()).hexdigest()[:32]


def restart_trace_id_for(container_id: str) -> str:
    """The trace id of a container start that has a trace of its own."""
    return hashlib.sha256(f"tracer/container-start/{container_id}".encode()).hexdigest()[:32]


def root_span_id(trace_id: str) -> str:
    return _span_id(trace_id, "root")


def _span_id(trace_id: str, key: str) -> str:
    return hashlib.sha256(f"{trace_id}/{key}".encode()).hexdigest()[:16]


def short(container_id: str) -> str:
    return container_id[:SHORT_ID]


def activity_event(activity: Activity, clock: Clock) -> SpanEvent:
    """A namespace, mount or cgroup event as a span event."""
    when = clock.wall_ns(activity.header.ktime_ns)
    if isinstance(activity, NamespaceEvent):
        verb = "setns" if activity.syscall is NamespaceSyscall.SETNS else "unshare"
        names = namespace_names(activity.flags_raw)
        ns = activity.header.ns
        return SpanEvent(f"{verb} {','.join(names)}".rstrip(), when, {
            "tracer.syscall.ret": activity.ret, "tracer.ns.flags_raw": activity.flags_raw,
            "tracer.ns.net": ns.net, "tracer.ns.mnt": ns.mnt, "tracer.ns.pid": ns.pid,
            "tracer.ns.uts": ns.uts, "tracer.ns.ipc": ns.ipc,
        })
    if isinstance(activity, MountEvent):
        return SpanEvent(f"mount {activity.target}", when, {
            "tracer.mount.source": activity.source, "tracer.mount.fstype": activity.fstype,
            "tracer.mount.flags_raw": activity.flags_raw, "tracer.syscall.ret": activity.ret,
        })
    if isinstance(activity, ExecFailedEvent):
        return SpanEvent(f"execve failed {activity.filename}", when, {
            "process.executable.path": activity.filename, "tracer.syscall.ret": activity.ret,
            "tracer.syscall.error": errno_text(activity.ret),
        })
    if isinstance(activity, PivotRootEvent):
        return SpanEvent("pivot_root", when, {
            "tracer.pivot_root.new_root": activity.new_root, "tracer.pivot_root.put_old": activity.put_old,
            "tracer.syscall.ret": activity.ret,
        })
    if isinstance(activity, CgroupEvent):
        verb = "mkdir" if activity.header.type == EventType.CGROUP_MKDIR else "attach"
        attributes: dict[str, object] = {"tracer.cgroup.path": activity.path,
                                         "tracer.cgroup.hierarchy": activity.hierarchy}
        if verb == "attach":
            attributes["tracer.cgroup.attached_pid"] = activity.target_pid
        return SpanEvent(f"cgroup {verb}", when, attributes)
    assert isinstance(activity, CgroupWriteEvent)
    return SpanEvent(f"cgroup write {activity.file_name}", when, {
        "tracer.cgroup.file": activity.relative_path,
        "tracer.cgroup.value": activity.data.decode("utf-8", "replace").strip(),
        "tracer.cgroup.fs": cgroup_fs_name(activity.fs_magic),
    })


def process_attributes(proc: Process, image: Exec | None = None, exited: bool = True) -> dict[str, object]:
    """A process's attributes: those of `image` (one of its execs; its last
    by default), and its exit when `exited` (the exit is in the trace)."""
    image = image or proc.image
    attributes: dict[str, object] = {"process.pid": proc.pid}
    if proc.real_parent_pid:
        attributes["process.parent_pid"] = proc.real_parent_pid
    if proc.parent_key and proc.parent_key[0] != proc.real_parent_pid:
        # runc's stages clone with CLONE_PARENT: who created it is not its parent
        attributes["tracer.process.creator_pid"] = proc.parent_key[0]
    if proc.clone_flags_raw:
        attributes["tracer.process.clone_flags"] = ",".join(clone_flag_names(proc.clone_flags_raw))
    if image is not None:
        attributes["process.executable.path"] = image.filename
        attributes["process.command_args"] = list(image.argv)  # redacted (tracer.redaction)
        if image.argv_truncated:
            attributes["tracer.process.argv_truncated"] = True
    if proc.exit_code_raw is not None and exited:
        status = exit_status(proc.exit_code_raw)
        attributes["process.exit.code"] = status.code
        if status.signal_name:
            attributes["tracer.process.exit.signal"] = status.signal_name
    return attributes


class _TraceBuilder:
    def __init__(self, trace_id: str, clock: Clock, end_ktime: int | None = None):
        self.trace_id = trace_id
        self.clock = clock
        # when the start ended: no span goes beyond it; a process still
        # running then ends its span there (tracer.process.exited=false)
        self.end_ktime = end_ktime
        self.spans: list[Span] = []
        self.by_process: dict[ProcKey, Span] = {}      # the last span made for a process
        self.by_call: dict[int, list[Span]] = {}       # id(PairedCall) → its CLIENT, SERVER spans

    def add(self, key: str, name: str, service: str, parent: Span | None,
            start_ktime: int, end_ktime: int, attributes: dict | None = None) -> Span:
        span = Span(
            trace_id=self.trace_id, span_id=_span_id(self.trace_id, key),
            parent_id=parent.span_id if parent else None, name=name, service=service,
            start_ns=self.clock.wall_ns(start_ktime),
            end_ns=self.clock.wall_ns(max(end_ktime, start_ktime)),
            attributes=dict(attributes or {}),
        )
        self.spans.append(span)
        return span

    def in_start(self, ktime_ns: int | None) -> bool:
        """Whether something at `ktime_ns` happened within the start."""
        return ktime_ns is not None and (self.end_ktime is None or ktime_ns <= self.end_ktime)

    def clamp(self, start: int, end: int) -> int:
        return end if self.end_ktime is None else max(start, min(end, self.end_ktime))

    def process_span(self, key: str, name: str, service: str, parent: Span, proc: Process,
                     start_ktime: int | None = None, end_ktime: int | None = None, image: Exec | None = None,
                     stop_began: int | None = None) -> Span:
        """A span for a process's life (its exec, or fork, to its exit), with
        the activity that falls inside it as events; cut at the start's end.
        `image`: the exec whose attributes it shows (its last by default);
        `stop_began`: when the runtime began stopping its container."""
        start = start_ktime if start_ktime is not None else _exec_or_start(proc)
        exited = self.in_start(proc.exit_ns)
        if end_ktime is not None:
            natural = end_ktime
        elif exited:
            natural = proc.exit_ns
        else:  # still running when the start ended: it ran until then
            natural = self.end_ktime if self.end_ktime is not None else proc.last_seen_ns
        end = self.clamp(start, natural)
        span = self.add(f"{key}/{proc.pid}/{proc.key[1]}", name, service, parent, start, end,
                        process_attributes(proc, image, exited))
        span.events.extend(activity_event(a, self.clock) for a in proc.activity
                           if start <= a.header.ktime_ns <= max(start, end))
        if proc.oom_kill is not None and start <= proc.oom_kill.header.ktime_ns <= max(start, end):
            kill = proc.oom_kill
            span.events.append(SpanEvent("oom kill", self.clock.wall_ns(kill.header.ktime_ns), {
                "tracer.oom.victim_pid": kill.victim_pid, "tracer.oom.victim_comm": kill.victim_comm,
                "tracer.oom.anon_rss_kb": kill.anon_rss_kb, "tracer.oom.total_vm_kb": kill.total_vm_kb,
                "tracer.oom.file_rss_kb": kill.file_rss_kb, "tracer.oom.shmem_rss_kb": kill.shmem_rss_kb,
            }))
        self.by_process[proc.key] = span
        if exited and proc.exit_code_raw is not None and exit_status(proc.exit_code_raw).code != 0:
            if stop_began is not None and proc.exit_ns is not None and stop_began <= proc.exit_ns:
                # the runtime's own stop (StopContainer, StopPodSandbox): not a failure
                span.attributes["tracer.process.stopped_by_runtime"] = True
            else:
                span.status = "ERROR"
                span.status_message = f"exited with {exit_status(proc.exit_code_raw).code}"
        elif not exited and end_ktime is None:
            span.attributes["tracer.process.exited"] = False
        return span


def _exec_or_start(proc: Process) -> int:
    own = [e for e in proc.execs if not e.from_snapshot]
    return own[0].ktime_ns if own else proc.start_ns


def _container_span(builder: _TraceBuilder, root: Span, container: ContainerTrace,
                    stop_began: int | None = None) -> Span:
    kind = "sandbox" if container.is_sandbox else "container"
    group = builder.add(f"{container.container_id}/containerd", f"containerd {kind}",
                        SERVICE_CONTAINERD, root, 0, 0, _container_attributes(container))
    children: list[Span] = []

    for index, cni in enumerate(container.cni):
        span = builder.process_span(f"{container.container_id}/cni{index}",
                                    f"cni {cni.call.plugin} {cni.call.command}", SERVICE_CNI, group, cni.process,
                                    stop_began=stop_began)
        span.attributes.update({"tracer.cni.plugin": cni.call.plugin, "tracer.cni.command": cni.call.command,
                                "tracer.cni.ifname": cni.call.ifname, "tracer.cni.netns": cni.call.netns})
        for delegate in cni.delegates:
            call_name = delegate.image.basename if delegate.image else "plugin"
            builder.process_span(f"{container.container_id}/cni{index}/delegate", f"cni {call_name} {cni.call.command}",
                                 SERVICE_CNI, span, delegate, stop_began=stop_began)
        children.append(span)

    if container.shim_start is not None:
        shim = builder.process_span(f"{container.container_id}/shim-start", "shim start", SERVICE_SHIM,
                                    group, container.shim_start, stop_began=stop_began)
        shim.attributes["container.id"] = container.container_id
        if container.shim_daemon is not None:
            ready = container.shim_start.exit_ns or container.shim_daemon.last_seen_ns
            daemon = builder.process_span(f"{container.container_id}/shim-daemon", "shim daemon", SERVICE_SHIM,
                                          shim, container.shim_daemon, end_ktime=ready)
            daemon.attributes["tracer.shim.ready"] = container.shim_start.exit_ns is not None
        children.append(shim)

    if container.runc_create is not None:
        create = builder.process_span(f"{container.container_id}/runc-create",
                                      "runc create", SERVICE_RUNC, group,
                                      container.runc_create, stop_began=stop_began)
        call = parse_runc(container.runc_create.image) if container.runc_create.image else None
        if call is not None:
            create.attributes["tracer.runc.bundle"] = call.bundle
        create.attributes["container.id"] = container.container_id
        _init_spans(builder, create, container, stop_began)
        children.append(create)

    if container.runc_start is not None:
        children.append(builder.process_span(f"{container.container_id}/runc-start",
                                             "runc start", SERVICE_RUNC, group,
                                             container.runc_start, stop_began=stop_began))
        children[-1].attributes["container.id"] = container.container_id

    running_ktime = None
    if container.process is not None:
        proc = container.process
        entry = container_exec(proc)
        assert entry is not None
        running_ktime = entry.ktime_ns
        # from the entrypoint's exec to its exit when that was within the
        # start (its failure), else to the start's end, still running
        span = builder.process_span(f"{container.container_id}/process", f"exec {entry.filename}",
                                    SERVICE_CONTAINER, group, proc, start_ktime=entry.ktime_ns, image=entry,
                                    stop_began=stop_began)
        span.attributes.update({"container.id": container.container_id,
                                "tracer.process.exited": builder.in_start(proc.exit_ns)})
        if container.name and not container.is_sandbox:
            span.attributes["k8s.container.name"] = container.name
        # what the process exec'd next (a shell running its command), within the span
        end_ktime = builder.clamp(entry.ktime_ns, proc.exit_ns if builder.in_start(proc.exit_ns) else
                                  (builder.end_ktime or entry.ktime_ns))
        for later in proc.execs[proc.execs.index(entry) + 1:]:
            if later.ktime_ns <= end_ktime:
                span.events.append(SpanEvent(f"exec {later.filename}", builder.clock.wall_ns(later.ktime_ns), {
                    "process.executable.path": later.filename, "process.command_args": list(later.argv)}))
        children.append(span)

    # The containerd span covers the start: from its first child to the
    # moment the entrypoint runs (or the last child, if it never ran).
    group.start_ns = min((c.start_ns for c in children), default=root.start_ns)
    ends = [c.end_ns for c in children if c.service != SERVICE_CONTAINER]
    if running_ktime is not None:
        ends.append(builder.clock.wall_ns(running_ktime))
    group.end_ns = max(ends, default=group.start_ns)
    if container.missing:
        group.attributes["tracer.missing"] = ", ".join(container.missing)
    if any(c.status == "ERROR" for c in children if c.service != SERVICE_CONTAINER):
        group.status = "ERROR"
        group.status_message = next(c.name + ": " + c.status_message for c in children if c.status == "ERROR")
    return group


def _init_spans(builder: _TraceBuilder, create: Span, container: ContainerTrace, stop_began: int | None) -> None:
    stages = container.init_stages
    if not stages:
        return
    starts = [_exec_or_start(p) if stage == 0 else p.start_ns for stage, p in stages.items()]
    ends = []
    for stage, proc in stages.items():
        entry = container_exec(proc) if stage == 2 else None
        ends.append(entry.ktime_ns if entry else (proc.exit_ns or proc.last_seen_ns))
    init = builder.add(f"{container.container_id}/runc-init", "runc init",
                       SERVICE_RUNC, create, min(starts), builder.clamp(min(starts), max(ends)),
                       {"container.id": container.container_id})
    for stage in sorted(stages):
        proc = stages[stage]
        entry = container_exec(proc) if stage == 2 else None
        end = entry.ktime_ns if entry else None
        # Stage 0 starts at its exec; stages 1 and 2 are clones, so at fork.
        start = _exec_or_start(proc) if stage == 0 else proc.start_ns
        span = builder.process_span(f"{container.container_id}/runc-init/{stage}", STAGE_NAMES[stage], SERVICE_RUNC,
                                    init, proc, start_ktime=start, end_ktime=end, stop_began=stop_began)
        if entry is not None:
            # Its own exec is the entrypoint's; as a stage it ran runc init.
            span.attributes["process.command_args"] = list(proc.inherited.argv) if proc.inherited else []
            span.attributes["process.executable.path"] = proc.inherited.filename if proc.inherited else ""
            for key in ("process.exit.code", "tracer.process.exit.signal", "tracer.process.stopped_by_runtime"):
                span.attributes.pop(key, None)
            span.status, span.status_message = "UNSET", ""


def _container_attributes(container: ContainerTrace) -> dict[str, object]:
    attributes: dict[str, object] = {"container.id": container.container_id,
                                     "container.runtime.name": CONTAINER_RUNTIME}
    if container.name and not container.is_sandbox:
        attributes["k8s.container.name"] = container.name
    if container.image:
        attributes["container.image.name"] = container.image
    bundle = container.activity.bundle
    if bundle is not None:
        for key, value in sorted(bundle.resources.items()):
            attributes[f"tracer.resources.{key}"] = value
        if bundle.cgroups_path:
            attributes["tracer.cgroup.path"] = bundle.cgroups_path
    for key, value in sorted(container.activity.start_pressure.items()):
        attributes[f"tracer.start.{key}"] = value
    netns = container.activity.netns
    if netns is not None:
        if netns.host_network:
            attributes["tracer.net.host_network"] = True
        if netns.error:
            attributes["tracer.net.error"] = netns.error
        for key in ("interfaces", "addresses", "routes"):
            if getattr(netns, key):
                attributes[f"tracer.net.{key}"] = list(getattr(netns, key))
    return attributes


# gRPC status codes the RPC semantic conventions call server errors: a
# SERVER span is ERROR for these only (a CLIENT span for any code but OK)
GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})  # UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS


def rpc_span_name(service: str, method: str) -> str:
    """As gRPC instrumentation names a call's spans (kubelet's too):
    `runtime.v1.RuntimeService/RunPodSandbox`."""
    if not method:
        return "unresolved"
    return f"{service}/{method}" if service else method


def _cri_view_bounds(call: PairedCall) -> dict[str, tuple[int, int]]:
    """(start, end) of the CLIENT and SERVER views' spans.  A write's bytes
    are stamped when the write has queued them (the socket tracepoints), so
    a runtime that reads a request at once, on another CPU, may stamp its
    read before the client's write is stamped; likewise a reply.  A request
    is written no later than it is read, and a reply likewise: so the client's
    start is at most the server's, and the server's end at most the client's.
    (Where writes are stamped when they begin, this changes nothing.)"""
    bounds = {}
    for view, kind in ((call.client, "CLIENT"), (call.server, "SERVER")):
        if view is not None and view.request_start_ns is not None:
            bounds[kind] = (view.request_start_ns, view.response_end_ns or view.end_ns or view.request_start_ns)
    client, server = call.client, call.server
    if "CLIENT" in bounds and "SERVER" in bounds:
        if server.request_start_ns < client.request_start_ns:
            bounds["CLIENT"] = (server.request_start_ns, bounds["CLIENT"][1])
        if client.response_end_ns and server.response_end_ns and server.response_end_ns > client.response_end_ns:
            bounds["SERVER"] = (bounds["SERVER"][0], client.response_end_ns)
    return bounds


def _cri_spans(builder: _TraceBuilder, root: Span, calls: list[PairedCall]) -> dict[tuple[str, str], Span]:
    """A CLIENT span per call (the caller's view: request write → response
    read) with the runtime's SERVER span inside it (request read → response
    write), named as gRPC instrumentation names them; the layer is the
    service (`kubelet`, `containerd`).  Returns the innermost span per
    (method, sandbox or container id it names), under which the runtime's
    own work for that id hangs."""
    work_parent: dict[tuple[str, str], Span] = {}
    for index, call in enumerate(calls):
        view = call.best_view
        method = call.method or ""
        name = rpc_span_name(view.service or "", method)
        inferred = ""
        if not (any(pod_keys(call)[:2]) or pod_keys(call)[2]):
            inferred = ("by the pod's annotations in the image spec" if image_annotations(call) else
                        "inferred: same connection, after this pod's calls (the call names no pod)")
        attributes: dict[str, object] = {
            "rpc.system": "grpc", "rpc.service": view.service or "", "rpc.method": method or "unresolved",
            "network.transport": "unix", "tracer.cri.method_resolution": view.method_resolution,
        }
        # the runtime's socket: the path the client connected to (an accepted end has none)
        socket_path = next((e.path for e in (call.client_endpoint, call.server_endpoint) if e is not None and e.path), "")
        if socket_path:
            attributes["server.address"] = socket_path
        if view.method_evidence:
            attributes["tracer.cri.method_evidence"] = view.method_evidence
        status_code, message = call.grpc_status, call.grpc_message
        if status_code is not None:
            attributes["rpc.grpc.status_code"] = status_code
        if message:
            attributes["tracer.cri.error"] = message
        parent = root
        span = None
        # kubelet's own span of the call, when it sent its trace context
        kubelets = traceparent_of(call)
        bounds = _cri_view_bounds(call)
        for view_, endpoint, kind in ((call.client, call.client_endpoint, "CLIENT"),
                                      (call.server, call.server_endpoint, "SERVER")):
            if view_ is None or view_.request_start_ns is None:
                continue
            if kind == "CLIENT" and kubelets is not None and kubelets[0] == builder.trace_id:
                # kubelet's span is in this very trace: no copy of it; the
                # runtime's span goes under it
                continue
            service = endpoint.comm if endpoint else ("kubelet" if kind == "CLIENT" else "containerd")
            start, end = bounds[kind]
            span = builder.add(f"cri/{index}/{kind}", name, service, parent,
                               start, end, dict(attributes))
            span.kind = kind
            if kind == "SERVER" and parent is root and kubelets is not None and kubelets[0] == builder.trace_id:
                span.parent_id = kubelets[1]
            elif kind == "CLIENT" and kubelets is not None:
                # kubelet's span is in a trace of its own: linked, not copied
                span.links.append(SpanLink(*kubelets, {"tracer.link.kind": "kubelet span"}))
            if endpoint is not None:
                span.attributes["process.pid"] = endpoint.pid
                if endpoint.opened_before_tracing:
                    # why a method or status may be unresolved (HPACK late attach)
                    span.attributes["tracer.cri.connection_predates_tracing"] = True
            if not view_.complete:
                span.attributes["tracer.cri.incomplete"] = view_.incomplete_reason or ""
            if view_.method_resolution != view.method_resolution:
                span.attributes["tracer.cri.own_method_resolution"] = view_.method_resolution
            if view_.traceparent:
                span.attributes["tracer.cri.traceparent"] = view_.traceparent
            if status_code not in (None, 0) and (kind == "CLIENT" or status_code in GRPC_SERVER_ERRORS):
                span.status, span.status_message = "ERROR", message or f"gRPC status {status_code}"
            if inferred:
                span.attributes["tracer.cri.attribution"] = inferred
            builder.by_call.setdefault(id(call), []).append(span)
            parent = span
        if span is not None:
            sandboxes, containers, _ = pod_keys(call)
            for ident in sandboxes | containers:
                work_parent.setdefault((method, ident), span)
    return work_parent


_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def traceparent_of(call: PairedCall) -> tuple[str, str] | None:
    """(trace id, span id) of the CRI client's own span of this call, from
    the W3C `traceparent` it sent (kubelet does, with its tracing on)."""
    for view in (call.client, call.server):
        match = _TRACEPARENT.match((view.traceparent or "").strip()) if view else None
        if match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16:
            return match.group(1), match.group(2)
    return None


def kubelet_context(calls: list[PairedCall]) -> tuple[str, str] | None:
    """(trace id, span id) of kubelet's span of the first call that carries
    trace context: the pod's trace joins that trace, under that span."""
    return next((context for call in calls if (context := traceparent_of(call)) is not None), None)


@dataclass(frozen=True)
class StartExtent:
    """When a pod start (or a container start) ended, and its calls."""

    end_ktime: int | None             # kernel time; None: nothing of it was seen
    calls: tuple[PairedCall, ...]     # the pod's calls that began by then


def start_extent(pod: PodTrace, calls: list[PairedCall] | tuple[PairedCall, ...] = (),
                 processes: Mapping[ProcKey, Process] | None = None) -> StartExtent:
    """A start ends when kubelet's last StartContainer of it returns (the
    entrypoint's exec, without CRI data), or at its failure, whichever is
    later: the first error the diagnosis finds (with every call then under
    way), or a container's exit within its crash window.  Before the start
    got that far (a trace built while it is under way) it ends with the
    last of its steps seen.  A later exit, a teardown, kubelet's status
    polls: not part of it."""
    calls = list(calls)
    processes = processes or {}
    findings = diagnose(pod, calls, processes)
    started = _started_by(pod, calls)
    ends = [started] if started is not None else []
    # an error after every container started (a status poll during the
    # teardown) is not the start's
    failure = next((f for f in findings if f.is_error and (started is None or f.time_ns <= started)), None)
    if failure is not None:
        ends.append(max([failure.time_ns] + [_call_end(c) for c in calls if c.start_ns <= failure.time_ns]))
    # a container that ended within its crash window (a failure, or exit 0)
    ends += [f.time_ns for f in findings if f.layer == LAYER_CONTAINER and f.process is not None and f.time_ns]
    end = max(ends) if ends else _last_step(pod, calls)
    if end is None:
        return StartExtent(None, tuple(calls))
    return StartExtent(end, tuple(c for c in calls if c.start_ns <= end))


def _call_end(call: PairedCall) -> int:
    """The end of a call as its spans show it: the client's view, else the server's."""
    view = call.client if call.client is not None and call.client.request_start_ns is not None else call.server
    if view is None:
        return 0
    return view.response_end_ns or view.end_ns or view.request_start_ns or 0


def _answered(call: PairedCall) -> int | None:
    """When the caller had its answer (or the runtime sent it), if it did."""
    ends = [v.response_end_ns for v in (call.client, call.server) if v is not None and v.response_end_ns]
    return ends[0] if ends else None


def _started_by(pod: PodTrace, calls: list[PairedCall]) -> int | None:
    """When the last container of the trace had been started: the latest
    of kubelet's StartContainer answers and the runtime's own steps (runc
    start exits after the entrypoint's exec, which may come after containerd
    answered); None while a container has neither an answer nor its
    entrypoint running."""
    if not pod.containers:
        return None
    ends = []
    for container in pod.containers:
        call = next((c for c in calls if c.method == "StartContainer"
                     and c.text("request", "container_id") == container.container_id), None)
        answered = _answered(call) if call is not None else None
        if answered is None and not container.started:
            return None
        if answered is not None:
            ends.append(answered)
    steps = _last_step(pod, [])
    return max(ends + ([steps] if steps is not None else []))


def _last_step(pod: PodTrace, calls: list[PairedCall]) -> int | None:
    """The last moment of a start still under way: its calls, its runtime
    processes (shim, CNI, runc), runc init up to the entrypoint, the
    entrypoint's exec."""
    times = [_call_end(c) for c in calls]
    for container in pod.all_containers:
        steps = [container.shim_start, container.runc_create, container.runc_start,
                 *(c.process for c in container.cni), *(d for c in container.cni for d in c.delegates)]
        times += [p.exit_ns or p.last_seen_ns for p in steps if p is not None]
        for stage, proc in container.init_stages.items():
            entry = container_exec(proc) if stage == 2 else None
            times.append(entry.ktime_ns if entry else (proc.exit_ns or proc.last_seen_ns))
        entry = container_exec(container.process) if container.process is not None else None
        if entry is not None:
            times.append(entry.ktime_ns)
    times = [t for t in times if t]
    return max(times) if times else None


def build_trace(pod: PodTrace, clock: Clock, node_name: str, calls: list[PairedCall] = (),
                processes: Mapping[ProcKey, Process] | None = None, extent: StartExtent | None = None,
                pod_start_trace_id: str | None = None) -> Trace:
    """The trace of a pod start (or a later container start): what happened
    from its first step to its end (`start_extent`, computed when not given).
    `pod_start_trace_id`: for a later container start, the id of the pod
    start's trace, when it was built (it may have joined kubelet's)."""
    processes = processes or {}
    extent = extent or start_extent(pod, calls, processes)
    calls = list(extent.calls)
    # A pod start's trace joins kubelet's own trace when kubelet propagates
    # one: same trace id, and the root hangs under kubelet's span of the
    # first call (RunPodSandbox).  A later container start keeps its own
    # (one trace per attempt, linked), linking kubelet's spans.
    context = kubelet_context(calls) if pod.restart is None else None
    if context:
        trace_id = context[0]
    elif pod.restart is None:
        trace_id = trace_id_for(pod.sandbox_id)
    else:
        trace_id = restart_trace_id_for(pod.key)
    builder = _TraceBuilder(trace_id, clock, extent.end_ktime)
    # for people; the root's name is one for every pod start (low cardinality)
    title = pod_title(pod.namespace, pod.name, pod.sandbox_id)
    root_attributes: dict[str, object] = {"tracer.sandbox.id": pod.sandbox_id, "tracer.containers": len(pod.containers)}
    if pod.attempt:
        root_attributes["tracer.pod.attempt"] = pod.attempt
    root = builder.add("root", ROOT_POD_START if pod.restart is None else ROOT_CONTAINER_START, SERVICE_TRACER,
                       None, 0, 0, root_attributes)
    if pod.restart is not None:
        _restart_root(root, pod, calls, pod_start_trace_id)
    if context:
        root.parent_id = context[1]
        root.attributes["tracer.kubelet.trace_joined"] = True
    work_parent = _cri_spans(builder, root, calls)
    groups = []
    for container in pod.all_containers:
        # containerd runs a sandbox within RunPodSandbox and a container's
        # task (shim, runc) within StartContainer
        method = "RunPodSandbox" if container.is_sandbox else "StartContainer"
        parent = work_parent.get((method, container.container_id), root)
        group = _container_span(builder, parent, container, runtime_stop_began(container, processes.get))
        if not container.is_sandbox:
            _name_from_cri(group, container.container_id, calls)
        groups.append(group)
    # the root's children, and spans under kubelet's own spans (not in this export)
    ids = {s.span_id for s in builder.spans}
    tops = [s for s in builder.spans[1:] if s.parent_id == root.span_id or s.parent_id not in ids]
    root.start_ns = min(s.start_ns for s in tops)
    # to the start's end: kubelet's last call, or a crash after it
    root.end_ns = max([s.end_ns for s in tops] + ([clock.wall_ns(extent.end_ktime)] if extent.end_ktime else []))
    # The pod start is the CRI client's work (kubelet's), once we see it.
    root.service = next((s.service for s in builder.spans if s.kind == "CLIENT"), root.service)
    errors = [g for g in groups if g.status == "ERROR"]
    if errors:
        root.status, root.status_message = "ERROR", errors[0].status_message
    _apply_findings(builder, root, diagnose(pod, calls, processes))
    if pod.partial_reasons:
        root.attributes["tracer.partial"] = True
        root.attributes["tracer.partial.reasons"] = "; ".join(pod.partial_reasons)
    # The pod's identity is the resource of every service of the trace (a
    # Collector's k8sattributes processor and resource-based routing key on it).
    resource = {"host.name": node_name, "k8s.node.name": node_name, "k8s.pod.uid": pod.uid,
                "k8s.pod.name": pod.name, "k8s.namespace.name": pod.namespace}
    return Trace(trace_id, title, builder.spans, {k: v for k, v in resource.items() if v})


def _name_from_cri(group: Span, container_id: str, calls: list[PairedCall]) -> None:
    """A container's name and image from its CreateContainer request, when
    its bundle could not be read (containerd deletes a failed one at once)."""
    if "k8s.container.name" in group.attributes and "container.image.name" in group.attributes:
        return
    for call in calls:
        if call.method == "CreateContainer" and call.text("response", "container_id") == container_id:
            name = call.text("request", "config", "metadata", "name")
            image = (call.text("request", "config", "image", "user_specified_image")
                     or call.text("request", "config", "image", "image"))
            if name:
                group.attributes.setdefault("k8s.container.name", name)
            if image:
                group.attributes.setdefault("container.image.name", image)


def _restart_root(root: Span, pod: PodTrace, calls: list[PairedCall], pod_start_trace_id: str | None) -> None:
    """A later container start: its attempt, and a link to the trace of the
    attempt before it (or of the pod's start)."""
    restart = pod.restart
    assert restart is not None
    attempt = restart.attempt
    for call in calls:  # kubelet's own count, when its CreateContainer was decoded
        recorded = call.field("request", "config", "metadata", "attempt")
        if call.method == "CreateContainer" and isinstance(recorded, int) and not isinstance(recorded, bool):
            attempt = recorded
    root.attributes.update({"tracer.trace.kind": "container restart" if attempt else "container start",
                            "k8s.container.restart_count": attempt})
    if restart.container_name:
        root.attributes["k8s.container.name"] = restart.container_name
    if restart.previous_in_pod_trace:
        previous = pod_start_trace_id or trace_id_for(pod.sandbox_id)
    else:
        previous = restart_trace_id_for(restart.previous_container_id)
    root.links.append(SpanLink(previous, root_span_id(previous), {"tracer.link.kind": "previous attempt"}))
    root.attributes["tracer.previous_attempt.trace_id"] = previous
    if restart.previous_container_id:
        root.attributes["tracer.previous_attempt.container_id"] = restart.previous_container_id
    if restart.previous_exit_code_raw is not None:
        # why it was restarted: how the attempt before ended
        status = exit_status(restart.previous_exit_code_raw)
        root.attributes["tracer.previous_attempt.exit_code"] = status.code
        if status.signal_name:
            root.attributes["tracer.previous_attempt.exit_signal"] = status.signal_name


def _apply_findings(builder: _TraceBuilder, root: Span, findings: list[Finding]) -> None:
    """Marks each failure on the span of its layer, and the first on the root.

    A CRI call's failure is the runtime's (its SERVER span) when its status
    is a server error by the RPC conventions, else the caller's (CLIENT);
    a SERVER span gets the diagnosis but stays UNSET for a client's error."""
    for finding in findings:
        server_error = True
        if finding.process is not None:
            targets = [builder.by_process[finding.process]] if finding.process in builder.by_process else []
        elif finding.call is not None:
            spans = builder.by_call.get(id(finding.call), [])
            servers = [s for s in spans if s.kind == "SERVER"]
            clients = [s for s in spans if s.kind == "CLIENT"]
            server_error = finding.call.grpc_status in (None, *GRPC_SERVER_ERRORS)
            if finding.layer == "image" and finding.cause == "image_not_present":
                # what kubelet decided itself (not to pull)
                targets = clients or servers
            else:
                # the runtime's view is the layer that failed, for its own errors
                targets = (servers if server_error else clients) or servers or clients
        else:
            targets = []
        for span in targets:
            span.attributes["tracer.diagnosis"] = finding.diagnosis
            if finding.is_error and (span.kind != "SERVER" or server_error):
                span.attributes["error.type"] = finding.cause
                span.status, span.status_message = "ERROR", finding.error or finding.diagnosis
    first = next((f for f in findings if f.is_error), findings[0] if findings else None)
    if first is None:
        return
    root.attributes["tracer.diagnosis"] = first.diagnosis
    root.attributes["tracer.failed_layer"] = first.layer
    if first.is_error:
        root.attributes["error.type"] = first.cause
        root.status, root.status_message = "ERROR", first.diagnosis
