"""Starting and removing pods through CRI, in the role of kubelet.

The request messages follow what kubelet's kuberuntime manager sends for an
ordinary best-effort pod, so that the tracer sees the same call sequence and
payloads as on a real node:

    RunPodSandbox -> PodSandboxStatus -> ImageStatus [-> PullImage]
        -> CreateContainer -> StartContainer

and on deletion StopContainer -> RemoveContainer -> StopPodSandbox ->
RemovePodSandbox. Each call's client-side start and end (``time.time_ns()``)
are recorded, since tests compare the tracer's spans against them.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tracer.cri import api_pb2
from tracer_testbed.client import RuntimeClient
from tracer_testbed.images import BUSYBOX_IMAGE

# kubelet's cgroupfs driver puts a best-effort pod's cgroup here.
BEST_EFFORT_CGROUP = "kubepods/besteffort"

# Labels kubelet sets on every sandbox and container (pkg/kubelet/types).
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"

# What kubelet asks for by default (ProcMount "Default"); containerd applies
# only the paths it is given.
DEFAULT_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# A best-effort container: the minimum CPU shares and the highest OOM score.
BEST_EFFORT_CPU_SHARES = 2
BEST_EFFORT_OOM_SCORE_ADJ = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class PodSpec:
    """A pod with one app container, reduced to what reaches the runtime."""

    name: str
    namespace: str = "default"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    image: str = BUSYBOX_IMAGE
    # Empty command and args run the image's entrypoint and cmd, as in k8s.
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    container_name: str = "app"
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    host_network: bool = False
    # Namespaced sysctls set for the pod (securityContext.sysctls).
    sysctls: Mapping[str, str] = field(default_factory=dict)
    share_process_namespace: bool = False
    # Sandbox attempt: kubelet counts up when it has to recreate the sandbox.
    sandbox_attempt: int = 0
    # Container attempt, i.e. the container's restart count.
    restart_count: int = 0
    # kubelet's minimum grace period. Kubernetes defaults to 30 s, but a
    # `sleep` running as PID 1 ignores SIGTERM and would hold every stop.
    termination_grace_period_s: int = 2
    # The container's memory limit (resources.limits.memory); 0 = none.
    memory_limit_bytes: int = 0
    # kubelet's imagePullPolicy: "IfNotPresent" or "Never".
    image_pull_policy: str = "IfNotPresent"
    # How often the kubelet role restarts the container after it exits
    # (restartPolicy Always, without kubelet's back-off): a crash loop.
    restarts: int = 0

    @property
    def log_directory_name(self) -> str:
        """kubelet's pod log directory name: <namespace>_<name>_<uid>."""
        return f"{self.namespace}_{self.name}_{self.uid}"

    @property
    def cgroup_parent(self) -> str:
        return pod_cgroup_parent(self.uid)


def pod_cgroup_parent(pod_uid: str) -> str:
    """The cgroup kubelet (cgroupfs driver) gives a best-effort pod."""
    return f"/{BEST_EFFORT_CGROUP}/pod{pod_uid}"


def pod_uid_from_log_directory(log_directory: Path) -> str:
    """The pod UID from a kubelet-style log directory name (names have no '_')."""
    return log_directory.name.rsplit("_", 1)[-1]


@dataclass(frozen=True)
class CallTiming:
    """One CRI call as the client saw it, in wall-clock nanoseconds."""

    method: str  # e.g. "RunPodSandbox"
    start_ns: int
    end_ns: int
    error: str = ""  # the gRPC status code name when the call failed

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class StartedPod:
    """A pod whose app container was started, and how its start went."""

    spec: PodSpec
    sandbox_id: str
    container_id: str
    sandbox_config: api_pb2.PodSandboxConfig
    calls: list[CallTiming]
    restarted: list[StartedPod] = field(default_factory=list)  # later attempts of its container

    @property
    def start_ns(self) -> int:
        return self.calls[0].start_ns

    @property
    def end_ns(self) -> int:
        return self.calls[-1].end_ns

    def timing(self, method: str) -> CallTiming:
        """The first call of ``method`` made while starting this pod."""
        return next(call for call in self.calls if call.method == method)


class PodStartError(RuntimeError):
    """A CRI call failed while starting a pod; the calls made so far are kept."""

    def __init__(self, spec: PodSpec, calls: list[CallTiming], sandbox_id: str, cause: Exception) -> None:
        failed_call = calls[-1].method if calls else "preparation"
        super().__init__(f"starting pod {spec.namespace}/{spec.name} failed in {failed_call}: {cause}")
        self.spec = spec
        self.calls = calls
        self.sandbox_id = sandbox_id


def _timed(calls: list[CallTiming], method: str, invoke: Callable[[], T]) -> T:
    """Run one CRI call and append its client-side timing, failed or not."""
    start_ns = time.time_ns()
    try:
        result = invoke()
    except Exception as error:
        calls.append(CallTiming(method, start_ns, time.time_ns(), _error_name(error)))
        raise
    calls.append(CallTiming(method, start_ns, time.time_ns()))
    return result


def _error_name(error: Exception) -> str:
    code = getattr(error, "code", None)
    return code().name if callable(code) else type(error).__name__


def _rfc3339_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _pod_labels(spec: PodSpec) -> dict[str, str]:
    return {
        **spec.labels,
        LABEL_POD_NAME: spec.name,
        LABEL_POD_NAMESPACE: spec.namespace,
        LABEL_POD_UID: spec.uid,
    }


def _namespace_options(spec: PodSpec) -> api_pb2.NamespaceOption:
    # Network and IPC are shared by the pod; PID is per container unless the
    # pod shares its process namespace (kubelet's pidNamespaceForPod).
    return api_pb2.NamespaceOption(
        network=api_pb2.NODE if spec.host_network else api_pb2.POD,
        pid=api_pb2.POD if spec.share_process_namespace else api_pb2.CONTAINER,
        ipc=api_pb2.POD,
    )


def _unconfined() -> api_pb2.SecurityProfile:
    # kubelet's choice when the pod names no seccomp profile.
    return api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined)


def sandbox_config(spec: PodSpec, log_root: Path) -> api_pb2.PodSandboxConfig:
    """The PodSandboxConfig kubelet would build for this pod."""
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(
            name=spec.name, uid=spec.uid, namespace=spec.namespace, attempt=spec.sandbox_attempt
        ),
        # Host-network pods get no hostname: runc refuses to set one without
        # a private UTS namespace.
        hostname="" if spec.host_network else spec.name,
        log_directory=str(log_root / spec.log_directory_name),
        labels=_pod_labels(spec),
        annotations={"kubernetes.io/config.seen": _rfc3339_now(), "kubernetes.io/config.source": "api"},
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=spec.cgroup_parent,
            sysctls=dict(spec.sysctls),
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=_namespace_options(spec), seccomp=_unconfined()
            ),
        ),
    )


def _container_hash(spec: PodSpec) -> str:
    # kubelet hashes the container spec to notice changes; any stable digest
    # of the fields that define the container will do here.
    fields = (spec.container_name, spec.image, spec.command, spec.args, sorted(spec.env.items()))
    return format(zlib.crc32(repr(fields).encode()), "x")


def container_config(spec: PodSpec, image_ref: str) -> api_pb2.ContainerConfig:
    """The ContainerConfig kubelet would build for the pod's app container.

    ``image_ref`` is the image id from ImageStatus: kubelet creates the
    container from the resolved image and keeps the user's name alongside.
    """
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=spec.container_name, attempt=spec.restart_count),
        image=api_pb2.ImageSpec(image=image_ref, user_specified_image=spec.image),
        command=list(spec.command),
        args=list(spec.args),
        envs=[api_pb2.KeyValue(key=key, value=value.encode()) for key, value in spec.env.items()],
        labels={
            LABEL_CONTAINER_NAME: spec.container_name,
            LABEL_POD_NAME: spec.name,
            LABEL_POD_NAMESPACE: spec.namespace,
            LABEL_POD_UID: spec.uid,
        },
        annotations={
            "io.kubernetes.container.hash": _container_hash(spec),
            "io.kubernetes.container.restartCount": str(spec.restart_count),
            "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
            "io.kubernetes.container.terminationMessagePolicy": "File",
            "io.kubernetes.pod.terminationGracePeriod": str(spec.termination_grace_period_s),
        },
        log_path=f"{spec.container_name}/{spec.restart_count}.log",
        linux=api_pb2.LinuxContainerConfig(
            # A pod with a memory limit is Burstable, not best-effort, for
            # kubelet; its cgroup still goes under the best-effort parent
            # here so that the test bed cleans up one tree.
            resources=api_pb2.LinuxContainerResources(
                cpu_shares=BEST_EFFORT_CPU_SHARES, oom_score_adj=BEST_EFFORT_OOM_SCORE_ADJ,
                memory_limit_in_bytes=spec.memory_limit_bytes,
            ),
            security_context=api_pb2.LinuxContainerSecurityContext(
                namespace_options=_namespace_options(spec),
                seccomp=_unconfined(),
                masked_paths=list(DEFAULT_MASKED_PATHS),
                readonly_paths=list(DEFAULT_READONLY_PATHS),
            ),
        ),
    )


class ImageNeverPullError(RuntimeError):
    """kubelet's ErrImageNeverPull: the image is absent and may not be pulled."""


def _ensure_image(client: RuntimeClient, calls: list[CallTiming], spec: PodSpec,
                  config: api_pb2.PodSandboxConfig) -> str:
    """kubelet's EnsureImageExists: the image id."""
    annotations = dict(config.annotations)
    status = _timed(calls, "ImageStatus", lambda: client.image_status(spec.image, annotations=annotations))
    if status.image.id:
        return status.image.id
    if spec.image_pull_policy == "Never":
        # kubelet's own message; it makes no further CRI call for the container
        raise ImageNeverPullError(f'Container image "{spec.image}" is not present with pull policy of Never')
    pulled = _timed(calls, "PullImage", lambda: client.pull_image(spec.image, config, annotations=annotations))
    return pulled.image_ref


def start_pod(client: RuntimeClient, spec: PodSpec, log_root: Path) -> StartedPod:
    """Start a pod as kubelet does and return it with its call timings.

    ``log_root`` plays the part of /var/log/pods; the pod's log directory is
    created under it first, as kubelet does. Raises PodStartError when a call
    fails; a sandbox that was already created is left for the caller (or the
    test bed's teardown) to remove.
    """
    sandbox = start_sandbox(client, spec, log_root)
    return start_app_container(client, sandbox)


@dataclass
class StartedSandbox:
    """The first half of a pod start: its sandbox runs, no container yet."""

    spec: PodSpec
    sandbox_id: str
    sandbox_config: api_pb2.PodSandboxConfig
    calls: list[CallTiming]


def start_sandbox(client: RuntimeClient, spec: PodSpec, log_root: Path) -> StartedSandbox:
    """kubelet's first steps of a pod start: RunPodSandbox, PodSandboxStatus."""
    calls: list[CallTiming] = []
    config = sandbox_config(spec, log_root)
    Path(config.log_directory).mkdir(parents=True, exist_ok=True)
    sandbox_id = ""
    try:
        sandbox_id = _timed(calls, "RunPodSandbox", lambda: client.run_pod_sandbox(config)).pod_sandbox_id
        _timed(calls, "PodSandboxStatus", lambda: client.pod_sandbox_status(sandbox_id))
    except Exception as error:
        raise PodStartError(spec, calls, sandbox_id, error) from error
    return StartedSandbox(spec, sandbox_id, config, calls)


def start_app_container(client: RuntimeClient, sandbox: StartedSandbox) -> StartedPod:
    """The rest of a pod start: its image, then its app container."""
    spec, sandbox_id, config = sandbox.spec, sandbox.sandbox_id, sandbox.sandbox_config
    calls = list(sandbox.calls)
    try:
        image_ref = _ensure_image(client, calls, spec, config)
        container = container_config(spec, image_ref)
        created = _timed(calls, "CreateContainer", lambda: client.create_container(sandbox_id, container, config))
        _timed(calls, "StartContainer", lambda: client.start_container(created.container_id))
    except Exception as error:
        raise PodStartError(spec, calls, sandbox_id, error) from error
    return StartedPod(spec, sandbox_id, created.container_id, config, calls)


def restart_container(client: RuntimeClient, pod: StartedPod) -> StartedPod:
    """kubelet's restart of a pod's exited container: a new container, with
    the next attempt number, in the same sandbox (the old one is kept, as
    kubelet keeps it for its logs)."""
    spec = dataclasses.replace(pod.spec, restart_count=pod.spec.restart_count + 1)
    config = pod.sandbox_config  # the pod's, as kubelet keeps it
    calls: list[CallTiming] = []
    try:
        image_ref = _ensure_image(client, calls, spec, config)
        created = _timed(calls, "CreateContainer",
                         lambda: client.create_container(pod.sandbox_id, container_config(spec, image_ref), config))
        _timed(calls, "StartContainer", lambda: client.start_container(created.container_id))
    except Exception as error:
        raise PodStartError(spec, calls, pod.sandbox_id, error) from error
    return StartedPod(spec, pod.sandbox_id, created.container_id, config, calls)


EXIT_WAIT_S = 30.0


def wait_for_exit(client: RuntimeClient, container_id: str, timeout_s: float = EXIT_WAIT_S) -> int:
    """Wait until the container has exited (kubelet's PLEG would notice);
    returns its exit code."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.container_status(container_id).status
        if status.state == api_pb2.CONTAINER_EXITED:
            return status.exit_code
        if time.monotonic() > deadline:
            raise TimeoutError(f"container {container_id[:12]} still runs after {timeout_s} s")
        time.sleep(0.05)


def run_crash_loop(client: RuntimeClient, pod: StartedPod) -> StartedPod:
    """Restart the pod's container `spec.restarts` times, each after the
    previous attempt exited; the attempts go into `pod.restarted`."""
    attempt = pod
    for _ in range(pod.spec.restarts):
        wait_for_exit(client, attempt.container_id)
        attempt = restart_container(client, attempt)
        pod.restarted.append(attempt)
    return pod


def stop_and_remove(client: RuntimeClient, pod: StartedPod) -> list[CallTiming]:
    """Delete a pod as kubelet does; returns the timings of the calls."""
    calls: list[CallTiming] = []
    grace_s = pod.spec.termination_grace_period_s
    _timed(calls, "StopContainer", lambda: client.stop_container(pod.container_id, grace_s))
    _timed(calls, "RemoveContainer", lambda: client.remove_container(pod.container_id))
    _timed(calls, "StopPodSandbox", lambda: client.stop_pod_sandbox(pod.sandbox_id))
    _timed(calls, "RemovePodSandbox", lambda: client.remove_pod_sandbox(pod.sandbox_id))
    return calls


def remove_all_pods(client: RuntimeClient) -> list[str]:
    """Stop and remove every sandbox (and so its containers); return their ids."""
    sandbox_ids = [sandbox.id for sandbox in client.list_pod_sandbox().items]
    for sandbox_id in sandbox_ids:
        client.stop_pod_sandbox(sandbox_id)
        client.remove_pod_sandbox(sandbox_id)
    return sandbox_ids
