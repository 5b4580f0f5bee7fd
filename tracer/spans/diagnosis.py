"""Where a pod start broke, and why, in one line per failure.

Operators walk down the layers (kubelet's events, crictl, ctr, runc state,
the cgroup files) until they find the one that failed.  This does that walk
over a PodTrace and its CRI calls.  Each Finding names the layer, a stable
cause code (`error.type`), the original error text, a one-line diagnosis,
and what shows it: a process (its span) or a CRI call (its spans).

A failure is reported once, at the deepest layer that explains it: a
StartContainer error caused by `runc create` is runc's finding, and the CRI
spans above it keep only their gRPC status.  The evidence is the kernel's
(exit statuses, failed execs, OOM kills) first, and the runtime's own words
(the CRI error message, runc's log.json) for the text.
"""

from __future__ import annotations

import errno
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tracer.correlate.pods import ContainerTrace, PodTrace
from tracer.correlate.processes import Process, ProcKey
from tracer.correlate.roles import container_exec, parse_runc
from tracer.cri.calls import PairedCall
from tracer.format import duration_text, errno_text, exit_status, size_text

# How long after its entrypoint's exec a container's exit (or an OOM kill in
# it) is its start's failure: the daemon's default quiet period, the window
# in which `tracer daemon` still catches a crash before it exports the start.
# A later exit is the workload's (or the runtime's stop): not in the start's trace.
CRASH_WINDOW_NS = 2_000_000_000

LAYER_IMAGE = "image"            # the image service (PullImage, ImageStatus)
LAYER_CNI = "cni"
LAYER_CONTAINERD = "containerd"
LAYER_RUNC = "runc"
LAYER_CONTAINER = "container"     # the container's own process


@dataclass(frozen=True)
class Finding:
    layer: str
    cause: str                        # error.type: stable, searchable
    diagnosis: str                    # the one line
    error: str = ""                   # the failing layer's own error text
    is_error: bool = True             # False: worth saying, not a failure
    time_ns: int = 0                  # kernel time of the failure, for order
    process: ProcKey | None = None    # shown on this process's span …
    call: PairedCall | None = None    # … or on this CRI call's spans


def diagnose(pod: PodTrace, calls: list[PairedCall], processes: Mapping[ProcKey, Process]) -> list[Finding]:
    """Every failure of this pod start, earliest first."""
    findings: list[Finding] = []
    explained: set[int] = set()      # ids of CRI calls a deeper finding explains
    for container in pod.all_containers:
        call = _runtime_call(container, calls)
        finding = _container_finding(container, call, processes)
        if finding is not None:
            findings.append(finding)
            if call is not None and finding.layer != LAYER_CONTAINER:
                explained.add(id(call))
    for call in calls:
        if id(call) not in explained and call.grpc_status not in (None, 0):
            findings.append(_call_finding(call))
    missing_image = _image_never_pulled(pod, calls)
    if missing_image is not None:
        findings.append(missing_image)
    return sorted(findings, key=lambda f: f.time_ns)


# ---- the runtime's calls ----------------------------------------------------

def _message(call: PairedCall | None) -> str:
    return call.grpc_message if call is not None else ""


def _call_ktime(call: PairedCall) -> int:
    view = call.server or call.client
    assert view is not None
    return view.response_end_ns or view.end_ns or view.request_start_ns or 0


def _runtime_call(container: ContainerTrace, calls: list[PairedCall]) -> PairedCall | None:
    """The CRI call in which containerd ran this container's start."""
    method = "RunPodSandbox" if container.is_sandbox else "StartContainer"
    for call in calls:
        if call.method != method:
            continue
        if container.is_sandbox or call.text("request", "container_id") == container.container_id:
            return call
    return None


_PULL_REASONS = (
    (re.compile(r"not found|manifest unknown", re.I), "the registry does not have this image or tag"),
    (re.compile(r"unauthorized|authentication required|denied|\b40[13]\b", re.I),
     "the registry refused access (credentials or permissions)"),
    (re.compile(r"connection refused|no such host|i/o timeout|network is unreachable|dial tcp", re.I),
     "the registry could not be reached"),
)


def _call_finding(call: PairedCall) -> Finding:
    message = _message(call) or f"gRPC status {call.grpc_status}"
    method = call.method
    if method == "PullImage":
        image = call.text("request", "image", "image")
        reason = next((text for pattern, text in _PULL_REASONS if pattern.search(message)), "the pull failed")
        return Finding(LAYER_IMAGE, "image_pull_failed", f'pulling image "{image}" failed: {reason}',
                       message, time_ns=_call_ktime(call), call=call)
    return Finding(LAYER_CONTAINERD, f"{_snake(method)}_failed", f"{method} failed in containerd: {message}",
                   message, time_ns=_call_ktime(call), call=call)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _image_never_pulled(pod: PodTrace, calls: list[PairedCall]) -> Finding | None:
    """kubelet asked whether the image is there, heard no, and neither
    pulled it nor created the container: imagePullPolicy Never
    (ErrImageNeverPull).  Only the ImageStatus call shows it."""
    if pod.restart is not None or any(c.method in ("CreateContainer", "PullImage") for c in calls):
        return None
    for call in calls:
        if call.method == "ImageStatus" and image_absent(call):
            image = call.text("request", "image", "image")
            return Finding(
                LAYER_IMAGE, "image_not_present",
                f'image "{image}" is not on the node and kubelet did not pull it '
                "(imagePullPolicy: Never gives ErrImageNeverPull); no container was created",
                "image not present", time_ns=_call_ktime(call), call=call)
    return None


def image_absent(call: PairedCall) -> bool:
    """An ImageStatus whose decoded response has no image."""
    view = call.server or call.client
    if view is None or view.method_resolution not in ("decoded", "learned") or not view.response_messages \
            or call.grpc_status:
        return False
    return not call.field("response", "image")


# ---- the kernel's evidence, per container -----------------------------------

def _container_finding(container: ContainerTrace, call: PairedCall | None,
                       processes: Mapping[ProcKey, Process]) -> Finding | None:
    step = container.failed_step
    if step == "cni":
        return _cni_finding(container, call)
    if step == "runc create":
        return _runc_create_finding(container, call)
    if step == "runc init":
        return _runc_init_finding(container)
    if step == "runc start":
        proc = container.runc_start
        assert proc is not None and proc.exit_code_raw is not None
        code = exit_status(proc.exit_code_raw).code
        text = _message(call) or f"exited with {code}"
        return Finding(LAYER_RUNC, "runc_start_failed", f"runc start failed: {text}", text,
                       time_ns=proc.exit_ns or 0, process=proc.key)
    proc = container.process
    lookup = processes.get
    if proc is not None and proc.exit_code_raw is not None and in_crash_window(proc, proc.exit_ns):
        if stopped_by_runtime(container, proc.exit_ns, lookup):
            return None  # the pod's teardown (kubelet stopped it), not a failure of its start
        return _exit_finding(container, proc, lookup)
    oom = _oom_victim(container, lookup)
    if oom is not None and proc is not None and in_crash_window(proc, oom.oom_kill.header.ktime_ns):
        kill = oom.oom_kill
        assert kill is not None
        return Finding(LAYER_CONTAINER, "oom_killed",
                       f"pid {oom.pid} ({kill.victim_comm}) in the container was OOM-killed"
                       f"{_limit_text(container)}; the container kept running",
                       time_ns=kill.header.ktime_ns, process=proc.key)
    return None


def _cni_finding(container: ContainerTrace, call: PairedCall | None) -> Finding:
    failed = next(cni for cni in container.cni if cni.process.exit_code_raw)
    proc = failed.process
    code = exit_status(proc.exit_code_raw or 0).code
    message = _message(call)
    # containerd: … plugin type="bridge" failed (add): invalid CIDR address: …
    match = re.search(r'plugin type="([^"]+)"[^:]*failed \((\w+)\): (.*)', message)
    text = match.group(3) if match else f"exited with {code}"
    delegates = [d.image.basename for d in failed.delegates if d.image and d.exit_code_raw]
    also = f" (it ran {', '.join(delegates)}, which failed too)" if delegates else ""
    return Finding(LAYER_CNI, "cni_failed",
                   f"CNI plugin {failed.call.plugin} {failed.call.command} failed{also}: {text}; "
                   "the pod network config is wrong or the plugin's environment is broken",
                   message or text, time_ns=proc.exit_ns or 0, process=proc.key)


_RUNC_EXEC_ERROR = re.compile(r'exec: "([^"]*)": (.*?)(?::\s*unknown)?$')
# runc init writes the pod's sysctls under /proc/sys in the new namespaces:
# "open /proc/sys/net/ipv4/x: …" (runc 1.1), "write sysctl key net.ipv4.x: …" (later)
_RUNC_SYSCTL_ERROR = re.compile(r"(?:write sysctl key ([\w.-]+)|open /proc/sys/([\w./-]+)): (.*?)(?::\s*unknown)?$")


def _runc_create_finding(container: ContainerTrace, call: PairedCall | None) -> Finding:
    proc = container.runc_create
    assert proc is not None and proc.exit_code_raw is not None
    message = _message(call)
    # containerd: … OCI runtime create failed: runc create failed: <runc's error>: unknown
    runc_text = message.split("runc create failed: ", 1)[-1] if message else ""
    text = runc_text or container.activity.runc_error or f"exited with {exit_status(proc.exit_code_raw).code}"
    time_ns = proc.exit_ns or 0
    entrypoint = _RUNC_EXEC_ERROR.search(text)
    if entrypoint is not None:
        path, detail = entrypoint.group(1), entrypoint.group(2)
        cause_and_line = _entrypoint_problem(path, detail)
        if cause_and_line is not None:
            cause, line = cause_and_line
            return Finding(LAYER_RUNC, cause, line, message or text, time_ns=time_ns, process=proc.key)
    sysctl = _RUNC_SYSCTL_ERROR.search(text)
    if sysctl is not None:
        key, detail = sysctl.group(1) or sysctl.group(2).replace("/", "."), sysctl.group(3)
        return Finding(LAYER_RUNC, "sysctl_failed",
                       f"sysctl {key} could not be set in the pod's namespaces ({detail}): this node's kernel "
                       "lacks it, or it is not namespaced; check the pod's securityContext.sysctls",
                       message or text, time_ns=time_ns, process=proc.key)
    return Finding(LAYER_RUNC, "runc_create_failed", f"runc create failed: {text}", message or text,
                   time_ns=time_ns, process=proc.key)


def _entrypoint_problem(path: str, detail: str) -> tuple[str, str] | None:
    lowered = detail.lower()
    if "no such file" in lowered or "not found" in lowered:
        return ("entrypoint_not_found",
                f'entrypoint "{path}" does not exist in the image ({detail}): check the command and the image')
    if "permission denied" in lowered:
        return ("entrypoint_not_executable",
                f'entrypoint "{path}" is not executable (permission denied): the file lacks the executable bit')
    if "exec format error" in lowered:
        return ("exec_format_error",
                f'entrypoint "{path}" is not a program this node can run (exec format error): '
                'a script without "#!" or a binary for another architecture')
    return None


_ERRNO_DETAIL = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.ENOEXEC: "exec format error",
}


def _runc_init_finding(container: ContainerTrace) -> Finding:
    """runc init's last stage exited without running the entrypoint: it
    reports only "exit 1"; the kernel saw why (a failed execve)."""
    stage = container.init_stages[2]
    code = exit_status(stage.exit_code_raw or 0).code
    failures = stage.exec_failures
    if failures:
        failure = failures[-1]
        detail = _ERRNO_DETAIL.get(-failure.ret, errno_text(failure.ret))
        problem = _entrypoint_problem(failure.filename, detail)
        text = f"execve({failure.filename}) failed: {errno_text(failure.ret)}"
        if problem is not None:
            return Finding(LAYER_RUNC, problem[0], problem[1], text, time_ns=failure.header.ktime_ns,
                           process=stage.key)
        return Finding(LAYER_RUNC, "entrypoint_exec_failed", f"running the entrypoint failed: {text}", text,
                       time_ns=failure.header.ktime_ns, process=stage.key)
    return Finding(LAYER_RUNC, "runc_init_failed",
                   f"runc init exited with {code} before it ran the entrypoint", f"exited with {code}",
                   time_ns=stage.exit_ns or 0, process=stage.key)


def _container_processes(container: ContainerTrace, lookup: Callable[[ProcKey], Process | None]) -> list[Process]:
    return [p for p in (lookup(k) for k in container.activity.processes) if p is not None]


def _oom_victim(container: ContainerTrace, lookup: Callable[[ProcKey], Process | None]) -> Process | None:
    return next((p for p in _container_processes(container, lookup) if p.oom_kill is not None), None)


def _limit_text(container: ContainerTrace) -> str:
    bundle = container.activity.bundle
    limit = bundle.resources.get("memory_limit_bytes") if bundle is not None else None
    return f" at its memory limit of {size_text(limit)}" if limit else ""


def in_crash_window(proc: Process, ktime_ns: int | None) -> bool:
    """Whether something at `ktime_ns` happened within CRASH_WINDOW_NS of
    the container's entrypoint exec (by `proc`, its first process)."""
    entry = container_exec(proc)
    return entry is not None and ktime_ns is not None and ktime_ns - entry.ktime_ns <= CRASH_WINDOW_NS


# runc's commands with which containerd stops a container: `kill` (StopContainer,
# StopPodSandbox: SIGTERM, then SIGKILL), `delete --force`
_STOP_COMMANDS = ("kill", "delete")


def runtime_stop_began(container: ContainerTrace, lookup: Callable[[ProcKey], Process | None]) -> int | None:
    """When the runtime began stopping the container (kernel time of its
    first `runc kill|delete <id>`), if it did."""
    starts = []
    for other in _container_processes(container, lookup):
        call = parse_runc(other.image) if other.image is not None else None
        if call is not None and call.subcommand in _STOP_COMMANDS and call.container_id == container.container_id:
            starts.append(other.start_ns)
    return min(starts, default=None)


def stopped_by_runtime(container: ContainerTrace, exit_ns: int | None,
                       lookup: Callable[[ProcKey], Process | None]) -> bool:
    """Whether the runtime was stopping the container (as containerd carries
    out kubelet's StopContainer and StopPodSandbox) when a process of it
    ended at `exit_ns`."""
    began = runtime_stop_began(container, lookup)
    return began is not None and exit_ns is not None and began <= exit_ns


def _exit_finding(container: ContainerTrace, proc: Process,
                  lookup: Callable[[ProcKey], Process | None]) -> Finding:
    """What a container's exit soon after its start means."""
    assert proc.exit_code_raw is not None and proc.exit_ns is not None
    status = exit_status(proc.exit_code_raw)
    entry = container_exec(proc)
    after = duration_text(proc.exit_ns - entry.ktime_ns) if entry else "soon"
    exited = f"exited with {status.code}" + (f" ({status.signal_name})" if status.signal_name else "")
    common = dict(error=exited, time_ns=proc.exit_ns, process=proc.key)
    victim = _oom_victim(container, lookup)
    if victim is not None and status.code == 137:
        kill = victim.oom_kill
        assert kill is not None
        return Finding(LAYER_CONTAINER, "oom_killed",
                       f"OOM-killed (exit 137) {after} after start: the kernel's OOM killer chose pid "
                       f"{victim.pid} ({kill.victim_comm}, {size_text(kill.anon_rss_kb << 10)} anonymous memory)"
                       f"{_limit_text(container)}; raise the limit or lower the usage", **common)
    if status.signal == signal.SIGKILL:
        return Finding(LAYER_CONTAINER, "killed",
                       f"killed by SIGKILL (exit 137) {after} after start, not by the OOM killer: "
                       "something else killed it (a user, a probe, kubelet)", **common)
    segfaulted = [p for p in _container_processes(container, lookup)
                  if p.exit_code_raw is not None and exit_status(p.exit_code_raw).signal == signal.SIGSEGV]
    if status.code == 139 or segfaulted:
        who = ", ".join(f"pid {p.pid} ({p.image.basename if p.image else p.comm})" for p in segfaulted)
        return Finding(LAYER_CONTAINER, "segfault",
                       f"segmentation fault (exit {status.code}) {after} after start"
                       + (f": {who} was killed by SIGSEGV" if who else "") + "; the program crashed", **common)
    if status.code == 0:
        return Finding(LAYER_CONTAINER, "exited",
                       f"the entrypoint's command ended (exit 0) {after} after start: a container that should keep "
                       "running has the wrong entrypoint or arguments", is_error=False, **common)
    if status.signal is not None:
        return Finding(LAYER_CONTAINER, "killed_by_signal",
                       f"killed by {status.signal_name} (exit {status.code}) {after} after start", **common)
    return Finding(LAYER_CONTAINER, "application_error",
                   f"application error: the entrypoint exited with {status.code} {after} after start; "
                   "its own output (container logs) says why", **common)
