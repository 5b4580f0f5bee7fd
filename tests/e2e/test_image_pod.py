"""End to end: the daemon's image, run as the DaemonSet's pod, traces a pod started after it.

The image is built from deploy/Dockerfile without a container engine
(tracer_testbed.daemon_image; cached, so only the first run takes minutes)
and imported into the test bed's containerd under the name the DaemonSet
uses.  The pod is the DaemonSet's own pod template as deploy/overlays/jaeger
renders it (`kubectl kustomize`), turned into CRI calls as kubelet would
(tracer_testbed.manifest_pod): the node's PID and network namespaces, its
capabilities, seccomp profile, read-only root, read-only mounts,
environment (NODE_NAME and HOST_IP from the downward API) and resources.
Only what the test bed does differently is overridden: where containerd
keeps its state on this node, the node's address (127.0.0.2: the metrics
endpoint must listen there and not on 127.0.0.1), and, through the
variables the DaemonSet documents, the OTLP endpoint (a real receiver,
node-local) and the test bed's CRI socket.

The pod's memory (its cgroup's peak and final usage, the daemon's RSS) is
printed, and written to $TRACER_IMAGE_POD_JSON if set: the measurement
behind the DaemonSet's memory request and limit (docs/deployment.md).

The daemon must become ready (its startupProbe), trace an ordinary pod
started afterwards through the test bed's "kubelet", export that pod's
trace to the receiver with the manifest's resource attributes, and stop
cleanly (exit code 0) within the manifest's grace period.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
import urllib.parse
import uuid
from pathlib import Path

import kustomize
import pytest
from http_probe import http_get
from otlp_receiver import GrpcReceiver, HttpReceiver, ReceivedSpan, as_trace
from tracecheck import ExpectedPod, check_cri_calls, check_pod_trace
from tracer_testbed import PodSpec
from tracer_testbed.daemon_image import build as build_image
from tracer_testbed.daemon_image import canonical_reference
from tracer_testbed.images import import_archive
from tracer_testbed.kubelet import start_pods_as_kubelet
from tracer_testbed.manifest_pod import (
    PodPlan,
    RunningPod,
    container_log,
    probe_url,
    run_sandbox,
    start_containers,
    stop,
)
from tracer_testbed.pods import pod_cgroup_parent

from tracer.app.metrics import scrape_samples
from tracer.cri import api_pb2
from tracer.spans.build import trace_id_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="builds an image, loads BPF and runs pods: needs root")]

CONTAINER = "tracer"
NODE = "image-pod-node"
NODE_IP = "127.0.0.2"  # the node's address as kubelet reports it (status.hostIP); on this machine
MEMORY_CGROUP = Path("/sys/fs/cgroup/memory")
APP_COMMAND = ("sleep", "3600")
APP_EXECUTABLE = "/bin/sleep"
# quiet period (2 s) + batch delay, with a wide margin
TRACE_TIMEOUT_S = 30
LAYER_SERVICES = {"containerd", "containerd-shim-runc-v2", "runc", "cni", "container"}
# capability numbers (linux/capability.h) of those a manifest may add
CAPABILITY_BITS = {"NET_ADMIN": 12, "NET_RAW": 13, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_NICE": 23, "SYS_RESOURCE": 24,
                   "PERFMON": 38, "BPF": 39}




@pytest.fixture(scope="module")
def daemonset() -> dict:
    return kustomize.daemonset("overlays/jaeger")


@pytest.fixture(scope="module")
def daemon_image(testbed, daemonset):
    """The image built from deploy/Dockerfile (or cached), imported under the DaemonSet's name."""
    built = build_image()
    container = next(c for c in daemonset["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER)
    assert canonical_reference(container["image"]) == built.name, "the DaemonSet runs another image than is built"
    import_archive(testbed.socket, built.archive, built.name)
    deadline = time.monotonic() + 30
    while not testbed.client.image_status(container["image"]).image.id:  # CRI learns of imports from events
        assert time.monotonic() < deadline, f"CRI does not see {container['image']}"
        time.sleep(0.1)
    return built


class DaemonPod:
    """The DaemonSet's pod on the test bed, and the receiver it exports to."""

    def __init__(self, testbed, daemonset: dict, volume_root: Path) -> None:
        self.testbed = testbed
        uid = str(uuid.uuid4())
        layout = testbed.layout
        self.plan = PodPlan.from_workload(
            daemonset, node_name=NODE, uid=uid,
            log_root=layout.pod_logs,  # the test bed's teardown removes what is logged there
            volume_root=volume_root,  # kubelet's /var/lib/kubelet/pods: the emptyDir volumes
            # the test bed's pod cgroups, which its teardown removes (kubelet's would be kubepods/burstable)
            cgroup_parent=pod_cgroup_parent(uid),
            # where this node's containerd keeps what the DaemonSet mounts
            host_paths={"/run/containerd": str(layout.state)},
            host_ip=NODE_IP,
        )
        self.env = {e["name"]: e.get("value") for e in self.plan.container(CONTAINER).get("env", [])}
        self.pod: RunningPod | None = None
        self.running = False
        self.receiver = None

    def start(self) -> None:
        self.pod = run_sandbox(self.testbed.client, self.plan)
        if self.plan.spec.get("hostNetwork"):
            collector = "127.0.0.1"  # a node-local collector
        else:  # the node, as the pod reaches it: the pod network's gateway
            assert self.pod.ip, "a pod in a network namespace of its own has an IP"
            collector = str(next(ipaddress.ip_network(self.testbed.network.subnet).hosts()))
        grpc = self.env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        self.receiver = (GrpcReceiver if grpc else HttpReceiver)(host=collector).start()
        self.running = True
        start_containers(self.testbed.client, self.pod, env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.endpoint,
            "TRACER_CRI_SOCKETS": str(self.testbed.socket),
        })

    def url(self, probe: str, path: str | None = None) -> str:
        assert self.pod is not None
        url = probe_url(self.plan, CONTAINER, probe, self.pod.ip)
        return url if path is None else urllib.parse.urlsplit(url)._replace(path=path).geturl()

    def exec(self, *argv: str) -> str:
        assert self.pod is not None
        result = self.testbed.client.exec_sync(self.pod.container_ids[CONTAINER], argv)
        assert result.exit_code == 0, (argv, result.stderr)
        return result.stdout.decode()

    def log(self) -> str:
        return container_log(self.pod, CONTAINER) if self.pod else ""

    def state(self) -> int:
        assert self.pod is not None
        return self.testbed.client.container_status(self.pod.container_ids[CONTAINER]).status.state

    def wait_started(self) -> float:
        """As the startupProbe: until it answers 200, within periodSeconds × failureThreshold."""
        probe = self.plan.container(CONTAINER)["startupProbe"]
        started = time.monotonic()
        deadline = started + probe["periodSeconds"] * probe["failureThreshold"]
        while time.monotonic() < deadline:
            assert self.state() == api_pb2.CONTAINER_RUNNING, f"the daemon exited:\n{self.log()}"
            if http_get(self.url("startupProbe"))[0] == 200:
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"startupProbe failed for {deadline - started:.0f} s:\n{self.log()}")

    def memory(self) -> dict[str, float]:
        """MiB: the container's memory cgroup (peak, now, and its cache) and the daemon's RSS (peak, now)."""
        assert self.pod is not None
        cgroup = MEMORY_CGROUP / self.plan.cgroup_parent.strip("/") / self.pod.container_ids[CONTAINER]
        mib = 1 << 20
        stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
        figures = {"cgroup_peak_mib": int((cgroup / "memory.max_usage_in_bytes").read_text()) / mib,
                   "cgroup_now_mib": int((cgroup / "memory.usage_in_bytes").read_text()) / mib,
                   "cgroup_cache_mib": int(stat["total_cache"]) / mib, "cgroup_rss_mib": int(stat["total_rss"]) / mib}
        for pid in (cgroup / "cgroup.procs").read_text().split():
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            if "tracer" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                figures["rss_peak_mib"] = int(status["VmHWM"].split()[0]) / 1024
                figures["rss_now_mib"] = int(status["VmRSS"].split()[0]) / 1024
        return figures

    def exec_status(self, *argv: str) -> int:
        assert self.pod is not None
        return self.testbed.client.exec_sync(self.pod.container_ids[CONTAINER], argv).exit_code

    def exported(self) -> dict[str, int]:
        """Span count per exported trace id, from the daemon's log."""
        return {m.group(2): int(m.group(1)) for m in re.finditer(r"(\d+) spans, trace ([0-9a-f]{32})", self.log())}

    def stop(self) -> dict[str, int]:
        """Delete the pod; the containers' exit codes.  Its log stays readable."""
        try:
            if self.pod is not None and self.running:
                self.running = False
                return stop(self.testbed.client, self.pod)
            return {}
        finally:
            if self.receiver is not None:
                self.receiver.stop()


@pytest.fixture
def daemon_pod(testbed, daemonset, daemon_image, tmp_path):
    running = DaemonPod(testbed, daemonset, tmp_path / "kubelet-pods")
    yield running
    running.stop()


@pytest.fixture
def app_pods(testbed):
    started = []
    yield started
    for pod in started:
        testbed.stop_pod(pod)


def test_image_as_daemonset_pod_traces_a_later_pod(testbed, daemon_pod, app_pods):
    daemon_pod.start()
    seconds_to_ready = daemon_pod.wait_started()
    print(f"daemon pod ready {seconds_to_ready:.1f} s after its start")

    (pod,) = start_pods_as_kubelet(testbed.socket, [PodSpec(name="after-image", namespace="e2e",
                                                            command=APP_COMMAND)], testbed.layout.pod_logs)
    app_pods.append(pod)
    trace_id = trace_id_for(pod.sandbox_id)

    def complete(spans: list[ReceivedSpan]) -> bool:
        expected = daemon_pod.exported().get(trace_id)
        return expected is not None and len({s.span_id for s in spans if s.trace_id == trace_id}) >= expected

    try:
        received = daemon_pod.receiver.received.wait_for(complete, TRACE_TIMEOUT_S)
    except TimeoutError as error:
        raise AssertionError(f"{error}; daemon log:\n{daemon_pod.log()}") from None
    spans = [s for s in received if s.trace_id == trace_id]
    assert len(spans) == daemon_pod.exported()[trace_id], "a span arrived twice"

    trace = as_trace(spans)
    check_pod_trace(trace, ExpectedPod.from_started(pod, APP_EXECUTABLE), {pod.sandbox_id, pod.container_id})
    # the CRI calls on the test bed's socket, decoded from inside the pod
    check_cri_calls(trace, pod, pod.calls)
    root = trace.root
    assert root.name == "pod start" and trace.name == "pod e2e/after-image"
    assert trace.resource["k8s.pod.uid"] == pod.spec.uid

    # the manifest's environment reached the daemon: the node name from the
    # downward API, the resource attributes and the service name
    resource = dict(item.split("=", 1) for item in daemon_pod.env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    for span in spans:
        assert span.resource["k8s.node.name"] == NODE
        assert span.resource["host.name"] == NODE
        for key, value in resource.items():
            assert span.resource[key] == value, key
        assert span.resource["k8s.pod.name"] == "after-image"
    services = {s.service for s in spans}
    assert services - {"kubelet"} <= LAYER_SERVICES | {daemon_pod.env["OTEL_SERVICE_NAME"]}
    assert {"kubelet", "containerd", "runc", "container"} <= services

    # its probes and metrics, on the port the manifest names, at the node's
    # address (the pod's IP), from outside the pod; nothing on the node's other addresses
    assert daemon_pod.url("livenessProbe").startswith(f"http://{NODE_IP}:")
    assert http_get(daemon_pod.url("livenessProbe"))[0] == 200
    assert http_get(daemon_pod.url("readinessProbe"))[0] == 200
    status, metrics = http_get(daemon_pod.url("livenessProbe", "/metrics"))
    assert status == 200
    assert scrape_samples(metrics, "tracer_pod_starts_total")[(("status", "ok"),)] >= 1
    assert http_get(daemon_pod.url("livenessProbe").replace(NODE_IP, "127.0.0.1"))[0] == 0  # refused
    (info,) = scrape_samples(metrics, "tracer_build_info")
    assert dict(info)["version"] == "0.1.0"

    # a read-only root, and every host path read-only: nothing written
    # but the emptyDir; no complaint about it in the log
    mounts = {fields[4]: fields[5].split(",") for fields in
              (line.split() for line in daemon_pod.exec("cat", "/proc/self/mountinfo").splitlines())}
    assert "ro" in mounts["/"]
    for path in ("/sys/kernel/btf", "/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/cgroup",
                 str(testbed.layout.state), "/lib/modules", "/host/usr/src"):
        path = daemon_pod.exec("readlink", "-f", path).strip()  # /lib is /usr/lib in the image
        assert "ro" in mounts[path], (path, mounts[path])
    assert "rw" in mounts["/var/cache/tracer"]
    assert not any(path.startswith(str(testbed.layout.root)) for path in mounts), "containerd's root is mounted"
    assert daemon_pod.exec_status("touch", "/usr/src/x") != 0
    assert daemon_pod.exec_status("touch", "/sys/kernel/tracing/x") != 0
    assert "Read-only file system" not in daemon_pod.log(), daemon_pod.log()

    # what the pod's memory came to, the measurement behind its request and
    # limit; with TRACER_IMAGE_POD_LOAD=N, after N more pod starts and stops
    # (batches of 20) as well
    memory = daemon_pod.memory()
    load = int(os.environ.get("TRACER_IMAGE_POD_LOAD", "0"))
    if load:
        memory = {"quiet": memory, "pods": load}
        samples = []
        for batch in range(0, load, 20):
            specs = [PodSpec(name=f"load-{batch + i}", namespace="e2e", command=APP_COMMAND)
                     for i in range(min(20, load - batch))]
            started = start_pods_as_kubelet(testbed.socket, specs, testbed.layout.pod_logs)
            for started_pod in started:
                testbed.stop_pod(started_pod)
            samples.append(daemon_pod.memory())
        memory["loaded"] = {key: max(s[key] for s in samples) for key in samples[0]}
        memory["loaded_last"] = samples[-1]
        assert daemon_pod.state() == api_pb2.CONTAINER_RUNNING, daemon_pod.log()
    print(json.dumps(memory))
    if os.environ.get("TRACER_IMAGE_POD_JSON"):
        Path(os.environ["TRACER_IMAGE_POD_JSON"]).write_text(json.dumps(memory, indent=1))
    assert sum(scrape_samples(metrics, "tracer_events_lost_total").values()) == 0

    # what the daemon ran with: the manifest's capabilities and no others,
    # the node's PID and network namespaces
    capabilities = daemon_pod.plan.container(CONTAINER)["securityContext"]["capabilities"]
    assert capabilities["drop"] == ["ALL"]
    expected = sum(1 << CAPABILITY_BITS[name] for name in capabilities["add"])
    effective = int(daemon_pod.exec("grep", "^CapEff:", "/proc/self/status").split()[1], 16)
    assert effective == expected, f"{effective:#x} != {expected:#x}"
    for namespace in ("pid", "net"):
        inside = daemon_pod.exec("readlink", f"/proc/self/ns/{namespace}").strip()
        assert inside == os.readlink(f"/proc/self/ns/{namespace}"), namespace

    # deleted as kubelet deletes it: SIGTERM, then the grace period
    stopped = time.monotonic()
    exit_codes = daemon_pod.stop()
    assert exit_codes == {CONTAINER: 0}, daemon_pod.log()
    assert time.monotonic() - stopped < daemon_pod.plan.termination_grace_period_s
    assert "stopped: " in daemon_pod.log()
