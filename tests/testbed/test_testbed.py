"""End-to-end tests of the test bed: real containerd, runc, CNI and pods."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import pytest
from tracer_testbed import PodNetwork, PodSpec, PodStartError, StartedPod, Testbed, host
from tracer_testbed.pods import pod_cgroup_parent

from tracer.cri import api_pb2

pytestmark = pytest.mark.e2e

START_SEQUENCE = ["RunPodSandbox", "PodSandboxStatus", "ImageStatus", "CreateContainer", "StartContainer"]
DELETE_SEQUENCE = ["StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"]

# A second test bed beside the session's needs its own bridge and subnet.
ISOLATED_NETWORK = PodNetwork(bridge="tracer1", subnet="10.88.78.0/24")


def sleeper(name: str) -> PodSpec:
    return PodSpec(name=name, command=("sleep", "3600"))


def container_state(bed: Testbed, pod: StartedPod) -> str:
    status = bed.client.container_status(pod.container_id).status
    return api_pb2.ContainerState.Name(status.state)


def sandbox_ids(bed: Testbed) -> set[str]:
    return {sandbox.id for sandbox in bed.client.list_pod_sandbox().items}


def pod_cgroup_dirs(uid: str) -> list[Path]:
    relative = pod_cgroup_parent(uid).lstrip("/")
    return [path for path in (h / relative for h in host.cgroup_hierarchies()) if path.exists()]


def test_pod_starts_runs_and_is_removed(testbed: Testbed) -> None:
    pod = testbed.start_pod(sleeper("sleeper"))

    assert container_state(testbed, pod) == "CONTAINER_RUNNING"
    assert [call.method for call in pod.calls] == START_SEQUENCE
    assert all(call.start_ns <= call.end_ns and not call.error for call in pod.calls)
    assert all(a.end_ns <= b.start_ns for a, b in pairwise(pod.calls))
    sandbox = testbed.client.pod_sandbox_status(pod.sandbox_id).status
    assert sandbox.labels["io.kubernetes.pod.uid"] == pod.spec.uid
    assert ipaddress.ip_address(sandbox.network.ip) in ipaddress.ip_network(testbed.network.subnet)
    exec_result = testbed.client.exec_sync(pod.container_id, ["cat", "/etc/hostname"])
    assert exec_result.stdout.decode().strip() == "sleeper"

    calls = testbed.stop_pod(pod)

    assert [call.method for call in calls] == DELETE_SEQUENCE
    assert pod.sandbox_id not in sandbox_ids(testbed)
    assert not [m for m in host.mounts_under(testbed.directory) if pod.sandbox_id in str(m)]


def test_host_network_pod_has_no_hostname(testbed: Testbed) -> None:
    pod = testbed.start_pod(PodSpec(name="hostnet", command=("sleep", "3600"), host_network=True))

    assert pod.sandbox_config.hostname == ""
    assert container_state(testbed, pod) == "CONTAINER_RUNNING"
    testbed.stop_pod(pod)


def test_failed_start_keeps_the_calls_made(testbed: Testbed) -> None:
    # No registry is reachable, so an image that was not imported cannot be pulled.
    with pytest.raises(PodStartError) as failure:
        testbed.start_pod(PodSpec(name="missing-image", image="localhost/missing:1"))

    calls = failure.value.calls
    assert [call.method for call in calls] == ["RunPodSandbox", "PodSandboxStatus", "ImageStatus", "PullImage"]
    assert calls[-1].error and not any(call.error for call in calls[:-1])
    testbed.client.stop_pod_sandbox(failure.value.sandbox_id)
    testbed.client.remove_pod_sandbox(failure.value.sandbox_id)


def test_ten_pods_start_concurrently(testbed: Testbed) -> None:
    specs = [sleeper(f"parallel-{index}") for index in range(10)]

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        pods = list(pool.map(testbed.start_pod, specs))
    try:
        assert [container_state(testbed, pod) for pod in pods] == ["CONTAINER_RUNNING"] * 10
        ips = {testbed.client.pod_sandbox_status(pod.sandbox_id).status.network.ip for pod in pods}
        assert len(ips) == 10
        # They really ran at once: every start began before the first one ended.
        assert max(pod.start_ns for pod in pods) < min(pod.end_ns for pod in pods)
    finally:
        with ThreadPoolExecutor(max_workers=len(pods)) as pool:
            list(pool.map(testbed.stop_pod, pods))
    assert not sandbox_ids(testbed) & {pod.sandbox_id for pod in pods}


def _orphan_shim(bed: Testbed, tmp_path: Path) -> tuple[Path, Path]:
    """What a containerd crash during RunPodSandbox leaves (the e2e restart
    test makes one for real): a shim of this bed whose task the next
    containerd does not know, its task directory and its ttrpc socket.  A
    stand-in here: a process with a shim's command line."""
    task_id = "0" * 64
    task = bed.layout.state / "io.containerd.runtime.v2.task" / "k8s.io" / task_id
    task.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    socket_path = tmp_path / "orphan-shim.sock"
    listener.bind(str(socket_path))
    listener.close()
    (task / "address").write_text(f"unix://{socket_path}")
    # python -c leaves the rest of the command line alone (sys.argv)
    subprocess.Popen(["containerd-shim-runc-v2", "-c", "import time; time.sleep(300)", "-namespace", "k8s.io",
                      "-id", task_id, "-address", str(bed.socket)], executable=sys.executable, start_new_session=True)
    return socket_path, task


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    ip_forward_before = host.IP_FORWARD.read_text()
    bed = Testbed(tmp_path / "bed", network=ISOLATED_NETWORK)
    bed.start()
    try:
        containerd_pid = bed.pid
        stopped = bed.start_pod(sleeper("stopped"))
        bed.stop_pod(stopped)
        # Left running on purpose: stop() must remove it.
        forgotten = bed.start_pod(sleeper("forgotten"))
        assert container_state(bed, forgotten) == "CONTAINER_RUNNING"
        orphan_socket, orphan_task = _orphan_shim(bed, tmp_path)
    finally:
        bed.stop()

    assert host.mounts_under(bed.directory) == []
    assert bed.remaining_processes() == []
    assert not orphan_socket.exists() and not orphan_task.exists()
    assert not Path(f"/proc/{containerd_pid}").exists()
    assert pod_cgroup_dirs(stopped.spec.uid) == pod_cgroup_dirs(forgotten.spec.uid) == []
    assert not host.link_exists(ISOLATED_NETWORK.bridge)
    assert host.IP_FORWARD.read_text() == ip_forward_before


ABANDON_A_RUN = textwrap.dedent(
    """
    import os, sys
    from tracer_testbed import PodSpec, Testbed
    bed = Testbed(sys.argv[1], network=PodNetwork(bridge=sys.argv[2], subnet=sys.argv[3]))
    bed.start()
    bed.start_pod(PodSpec(name="abandoned", command=("sleep", "3600")))
    print(bed.pid, flush=True)
    os._exit(0)  # no stop(): containerd, the shim and the pod stay behind
    """
).replace("from tracer_testbed import", "from tracer_testbed import PodNetwork,")


def test_start_cleans_up_after_a_run_that_never_stopped(tmp_path: Path) -> None:
    directory = tmp_path / "bed"
    network = ISOLATED_NETWORK
    repo_root = Path(__file__).resolve().parents[2]
    abandoned = subprocess.run(
        [sys.executable, "-c", ABANDON_A_RUN, str(directory), network.bridge, network.subnet],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    old_containerd = int(abandoned.stdout.strip())

    bed = Testbed(directory, network=network)
    bed.start()
    try:
        # (It may linger as a zombie until init reaps it: match by command line.)
        assert old_containerd not in bed.remaining_processes()
        assert sandbox_ids(bed) == set()
    finally:
        bed.stop()
    assert bed.remaining_processes() == []
    assert host.mounts_under(directory) == []
    assert not host.link_exists(network.bridge)
