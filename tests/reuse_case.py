"""Reused identities on a node, one after the other, and what their traces
must look like: shared by tests/e2e/test_reuse.py (live) and the
`reuse` fixture (tests/fixtures/make_captures.py, tests/unit/test_reuse_fixture.py).

1. pod `reuse/web` (uid A) starts, and is removed;
2. pod `reuse/web` again, a new pod (uid B), whose container `app` exits
   and is restarted by the kubelet role: a new container id, same name;
   then its sandbox is removed;
3. pod B's sandbox is made again (sandbox attempt 1: same uid, new
   sandbox), and runs.

Network namespace inode numbers are freed with each pod's namespace and
handed out again, so the pods typically share them; pids may be shared
too.  None of it may merge two traces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tracecheck import ExpectedPod, check_cri_calls, check_pod_trace, one, other_partial_reasons
from tracer_testbed import PodSpec, StartedPod
from tracer_testbed.kubelet import start_pods_as_kubelet

from tracer.spans.model import Trace

NAMESPACE = "reuse"
NAME = "web"
SLEEP = ("sleep", "3600")
# Removed in the middle of the run: it exits 0 by itself first (a stop
# would kill it, which its trace would show as the pod's failure).
QUITS = ("sh", "-c", "exit 0")
EXITING = ("sh", "-c", "sleep 0.3; exit 2")


@dataclass
class ReuseRun:
    first: StartedPod        # uid A
    second: StartedPod       # uid B, attempt 0; second.restarted[0] is its container's restart
    third: StartedPod        # uid B, sandbox attempt 1

    @property
    def pods(self) -> list[StartedPod]:
        return [self.first, self.second, self.third]

    def expected(self) -> dict:
        """What the traces are checked against (the fixture's expected.json)."""
        return {"first": _pod(self.first, "/bin/sh", 0), "second": _pod(self.second, "/bin/sh", 2),
                "third": _pod(self.third, "/bin/sleep", None),
                "restart_container_id": self.second.restarted[0].container_id}


def _pod(pod: StartedPod, executable: str, exit_code: int | None) -> dict:
    return dataclasses.asdict(ExpectedPod.from_started(pod, executable, exit_code))


def run(bed, uid_a: str, uid_b: str) -> ReuseRun:
    """The three steps, each from its own "kubelet" process."""
    socket, logs = bed.socket, bed.layout.pod_logs
    (first,) = start_pods_as_kubelet(socket, [PodSpec(name=NAME, namespace=NAMESPACE, uid=uid_a, command=QUITS)],
                                     logs)
    bed.stop_pod(first)
    second_spec = PodSpec(name=NAME, namespace=NAMESPACE, uid=uid_b, command=EXITING, restarts=1)
    (second,) = start_pods_as_kubelet(socket, [second_spec], logs)
    bed.stop_pod(second.restarted[0])  # its sandbox, with both containers
    third_spec = dataclasses.replace(second_spec, command=SLEEP, restarts=0, sandbox_attempt=1)
    (third,) = start_pods_as_kubelet(socket, [third_spec], logs)
    return ReuseRun(first, second, third)


def remove(bed, reuse: ReuseRun) -> None:
    bed.stop_pod(reuse.third)


def _container_ids(trace: Trace) -> set[str]:
    return {s.attributes["container.id"] for s in trace.spans if "container.id" in s.attributes}


def net_namespaces(trace: Trace) -> set[int]:
    """The pod's network namespace inodes: the ones runc's stages joined
    (containerd makes a pod's network namespace, runc joins it; CNI
    plugins go in and out of it, so they are not looked at)."""
    return {e.attributes["tracer.ns.net"] for s in trace.spans if s.name.startswith("runc:[") for e in s.events
            if e.name == "setns net" and e.attributes.get("tracer.ns.net")}


def check(traces: list[Trace], expected: dict) -> dict:
    """Four traces, none merged with another; returns what was reused."""
    first, second, third = (ExpectedPod(**expected[k]) for k in ("first", "second", "third"))
    restart_id = expected["restart_container_id"]
    assert len(traces) == 4, [(t.name, t.root.attributes.get("tracer.sandbox.id")) for t in traces]
    assert {t.name for t in traces} == {f"pod {NAMESPACE}/{NAME}"}
    by_key = {(t.root.attributes["tracer.sandbox.id"], t.root.attributes.get("tracer.trace.kind", "pod start")): t
              for t in traces}
    assert len(by_key) == 4
    all_ids = {first.sandbox_id, first.container_id, second.sandbox_id, second.container_id, restart_id,
               third.sandbox_id, third.container_id}
    for pod in (first, second, third):
        trace = by_key[(pod.sandbox_id, "pod start")]
        check_pod_trace(trace, pod, all_ids)
        # one call of each kind: none of another attempt's or of the restart's
        check_cri_calls(trace, pod)
    assert by_key[(first.sandbox_id, "pod start")].resource["k8s.pod.uid"] != \
        by_key[(second.sandbox_id, "pod start")].resource["k8s.pod.uid"]

    restart = by_key[(second.sandbox_id, "container restart")]
    root = restart.root.attributes
    assert restart.resource["k8s.pod.uid"] == second.uid and root["k8s.container.name"] == "app"
    assert root["k8s.container.restart_count"] == 1
    assert root["tracer.previous_attempt.container_id"] == second.container_id
    assert root["tracer.previous_attempt.exit_code"] == 2
    assert _container_ids(restart) == {restart_id}
    assert not other_partial_reasons(root), root.get("tracer.partial.reasons")
    for method in ("CreateContainer", "StartContainer"):
        assert len([s for s in restart.spans if s.kind == "CLIENT" and s.attributes["rpc.method"] == method]) == 1

    namespaces = [net_namespaces(by_key[(p.sandbox_id, "pod start")]) for p in (first, second, third)]
    pids = [{s.attributes["process.pid"] for s in t.spans if s.kind == "INTERNAL" and "process.pid" in s.attributes}
            for t in traces]
    return {"net_namespaces_shared": sorted(set.intersection(*namespaces[:2]) | set.intersection(*namespaces[1:])),
            "pids_shared": sorted({pid for i, a in enumerate(pids) for b in pids[i + 1:] for pid in a & b})}
