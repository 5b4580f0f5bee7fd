"""A tracer that starts while pods exist, and what its traces must look
like: shared by tests/e2e/test_tracer_restart.py (live, with a first
tracer before) and the `tracer-restart` fixture (tests/fixtures/
make_captures.py, tests/unit/test_tracer_restart_fixture.py).

Before the tracer: pod `tracer-restart/running` started, and pod
`tracer-restart/half-started` got its sandbox only.  While it traces: the
running container is killed (SIGKILL) and the kubelet role restarts it;
the half-started pod's container starts.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from tracecheck import other_partial_reasons
from tracer_testbed import PodSpec, StartedPod
from tracer_testbed.kubelet import (
    restart_containers_as_kubelet,
    start_app_containers_as_kubelet,
    start_pods_as_kubelet,
    start_sandboxes_as_kubelet,
)
from tracer_testbed.pods import StartedSandbox, wait_for_exit

from tracer.spans.model import Trace

NAMESPACE = "tracer-restart"
SLEEP = ("sleep", "3600")


@dataclass
class Before:
    running: StartedPod
    half: StartedSandbox


@dataclass
class During:
    killed_pid: int
    restarted: StartedPod
    finished: StartedPod


def start_before(bed, running_uid: str, half_uid: str) -> Before:
    logs = bed.layout.pod_logs
    (running,) = start_pods_as_kubelet(bed.socket, [PodSpec(name="running", namespace=NAMESPACE, uid=running_uid,
                                                            command=SLEEP)], logs)
    (half,) = start_sandboxes_as_kubelet(bed.socket, [PodSpec(name="half-started", namespace=NAMESPACE,
                                                              uid=half_uid, command=SLEEP)], logs)
    return Before(running, half)


def container_processes(container_id: str) -> list[int]:
    """Pids of the processes in a container's cgroup, oldest first."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cgroups = Path(f"/proc/{entry}/cgroup").read_text()
            start = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, ValueError, IndexError):
            continue
        if any(line.endswith("/" + container_id) for line in cgroups.splitlines()):
            found.append((start, int(entry)))
    return [pid for _, pid in sorted(found)]


def go_on(bed, before: Before) -> During:
    """Kill the running container and restart it; start the other pod's container."""
    logs = bed.layout.pod_logs
    main = container_processes(before.running.container_id)[0]
    os.kill(main, signal.SIGKILL)
    assert wait_for_exit(bed.client, before.running.container_id) == 137
    (restarted,) = restart_containers_as_kubelet(bed.socket, [before.running], logs)
    (finished,) = start_app_containers_as_kubelet(bed.socket, [before.half], logs)
    return During(main, restarted, finished)


def remove(bed, before: Before, during: During | None) -> None:
    bed.stop_pod(during.restarted if during else before.running)
    if during is not None:
        bed.stop_pod(during.finished)
    else:
        client = bed.client
        client.stop_pod_sandbox(before.half.sandbox_id)
        client.remove_pod_sandbox(before.half.sandbox_id)


def expected(before: Before, during: During) -> dict:
    return {"running_uid": before.running.spec.uid, "running_sandbox_id": before.running.sandbox_id,
            "killed_container_id": before.running.container_id, "killed_pid": during.killed_pid,
            "restarted_container_id": during.restarted.container_id,
            "half_uid": before.half.spec.uid, "half_sandbox_id": before.half.sandbox_id,
            "finished_container_id": during.finished.container_id}


def _container_ids(trace: Trace) -> set[str]:
    return {s.attributes["container.id"] for s in trace.spans if "container.id" in s.attributes}


def check(traces: list[Trace], assembler, want: dict) -> None:
    """Two traces, each with its pod's name and only its own container;
    the running pods were found, and the killed process's exit went to
    its own container."""
    for container_id, name in ((want["running_sandbox_id"], "running"), (want["killed_container_id"], "app"),
                               (want["half_sandbox_id"], "half-started")):
        activity = assembler.containers[container_id]
        assert activity.discovered, container_id
        assert activity.bundle is not None and activity.bundle.error is None, activity.bundle
        key = "sandbox-name" if activity.is_sandbox else "container-name"
        assert activity.annotations["io.kubernetes.cri." + key] == name
    killed = [key for key, proc in assembler.table.processes.items()
              if key[0] == want["killed_pid"] and proc.exit_code_raw is not None]
    assert len(killed) == 1 and assembler.owner[killed[0]] == want["killed_container_id"]

    assert len(traces) == 2, [(t.name, t.root.attributes.get("tracer.trace.kind")) for t in traces]
    by_uid = {t.resource["k8s.pod.uid"]: t for t in traces}

    restart = by_uid[want["running_uid"]]
    root = restart.root.attributes
    assert restart.name == f"pod {NAMESPACE}/running"
    assert root["tracer.sandbox.id"] == want["running_sandbox_id"]
    assert root["tracer.trace.kind"] == "container restart" and root["k8s.container.restart_count"] == 1
    assert root["k8s.container.name"] == "app"
    assert root["tracer.previous_attempt.container_id"] == want["killed_container_id"]
    assert root["tracer.previous_attempt.exit_code"] == 137
    assert root["tracer.previous_attempt.exit_signal"] == "SIGKILL"
    assert not other_partial_reasons(root), root.get("tracer.partial.reasons")
    assert _container_ids(restart) == {want["restarted_container_id"]}

    rest = by_uid[want["half_uid"]]
    root = rest.root.attributes
    assert rest.name == f"pod {NAMESPACE}/half-started"
    assert root["tracer.sandbox.id"] == want["half_sandbox_id"]
    assert root["tracer.trace.kind"] == "container start"
    assert root.get("tracer.partial") is True
    assert "the pod's start began before tracing" in root["tracer.partial.reasons"]
    assert _container_ids(rest) == {want["finished_container_id"]}
