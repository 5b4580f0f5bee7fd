"""Pod starts that break in one known way each, and what their traces must say.

tests/e2e/test_failed_starts.py runs them on the real runtime with real
BPF; tests/fixtures/make_captures.py records them once for the pure tests
(tests/unit/test_diagnosis.py), which check the same things on the replay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from tracer_testbed import PodSpec
from tracer_testbed.pods import PodStartError, StartedPod

from exporters.status import span_label
from tracecheck import other_partial_reasons
from tracer.spans.model import Span, Trace

MEMORY_LIMIT = 16 << 20
# Long enough for the crashing containers to exit and their events to be processed.
SETTLE_S = 1.5


@dataclass(frozen=True)
class FailureCase:
    spec: PodSpec
    layer: str                        # tracer.failed_layer
    cause: str                        # error.type
    span: str                         # the failing span, as a waterfall labels it (exporters.status.span_label)
    broken_network: bool = False      # started while the pod network's config is broken

    @property
    def name(self) -> str:
        return self.spec.name


HEALTHY = PodSpec(name="healthy", command=("sleep", "3600"))
CASES = (
    FailureCase(PodSpec(name="missing-image", image="localhost/no-such-image:1"),
                "image", "image_pull_failed", "containerd PullImage"),
    FailureCase(PodSpec(name="never-pulled", image="localhost/no-such-image:2", image_pull_policy="Never"),
                "image", "image_not_present", "kubelet ImageStatus"),
    FailureCase(PodSpec(name="entrypoint-missing", command=("/no/such/binary",)),
                "runc", "entrypoint_not_found", "runc create"),
    FailureCase(PodSpec(name="entrypoint-not-executable", command=("/bin/start.sh",)),
                "runc", "entrypoint_not_executable", "runc create"),
    FailureCase(PodSpec(name="exec-format", command=("/bin/not-a-program",)),
                "runc", "exec_format_error", "runc:[2:INIT]"),
    FailureCase(PodSpec(name="oom", memory_limit_bytes=MEMORY_LIMIT, command=("sh", "-c", "tail /dev/zero")),
                "container", "oom_killed", "exec /bin/sh"),
    # PID 1 of a PID namespace ignores a SIGSEGV sent with kill: a child crashes
    FailureCase(PodSpec(name="segfault", command=("sh", "-c", 'sh -c "kill -SEGV \\$\\$"; exit $?')),
                "container", "segfault", "exec /bin/sh"),
    FailureCase(PodSpec(name="crash-loop", command=("sh", "-c", "sleep 0.2; exit 3"), restarts=1),
                "container", "application_error", "exec /bin/sh"),
    FailureCase(PodSpec(name="no-network", command=("sleep", "3600")), "cni", "cni_failed", "cni bridge ADD",
                broken_network=True),
    # the sandbox itself fails (runc init cannot write the sysctl): no app container is created
    FailureCase(PodSpec(name="bad-sysctl", command=("sleep", "3600"), sysctls={"net.ipv4.no_such_sysctl": "1"}),
                "runc", "sysctl_failed", "runc create"),
)


def with_uids(uid_for) -> tuple[PodSpec, tuple[FailureCase, ...]]:
    """The healthy pod and the cases with the given pod UIDs (fixtures
    want fixed ones)."""
    healthy = replace(HEALTHY, uid=uid_for(HEALTHY.name))
    return healthy, tuple(replace(c, spec=replace(c.spec, uid=uid_for(c.name))) for c in CASES)


Outcome = StartedPod | PodStartError


def run_cases(bed, healthy: PodSpec, cases: tuple[FailureCase, ...]) -> list[Outcome]:
    """Starts them from a separate "kubelet" process, as kubelet would;
    the CNI case while the network config is broken."""
    from tracer_testbed.kubelet import run_pods_as_kubelet

    logs = bed.layout.pod_logs
    outcomes = run_pods_as_kubelet(bed.socket, [healthy] + [c.spec for c in cases if not c.broken_network], logs)
    broken = [c.spec for c in cases if c.broken_network]
    if broken:
        with bed.broken_network():
            outcomes += run_pods_as_kubelet(bed.socket, broken, logs)
    time.sleep(SETTLE_S)
    return outcomes


def remove_outcomes(bed, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, StartedPod):
            bed.stop_pod(outcome)
        elif outcome.sandbox_id:
            bed.client.stop_pod_sandbox(outcome.sandbox_id)
            bed.client.remove_pod_sandbox(outcome.sandbox_id)


def pod_traces(traces: list[Trace], uid: str) -> list[Trace]:
    """The pod's start trace first, then its restarts in attempt order."""
    mine = [t for t in traces if t.resource.get("k8s.pod.uid") == uid]
    return sorted(mine, key=lambda t: t.root.attributes.get("k8s.container.restart_count", -1))


def failing_span(trace: Trace, case: FailureCase) -> Span:
    matches = [s for s in trace.spans if span_label(s) == case.span and "tracer.diagnosis" in s.attributes]
    assert len(matches) == 1, (case.name, [(s.name, s.status) for s in trace.spans])
    return matches[0]


def check_failure(traces: list[Trace], case: FailureCase) -> Trace:
    """The pod start's trace is ERROR, names the right layer and cause on
    its root, and marks the failing layer's own span."""
    mine = pod_traces(traces, case.spec.uid)
    assert mine, f"{case.name}: no trace"
    trace = mine[0]
    root = trace.root
    assert trace.name == f"pod {case.spec.namespace}/{case.name}"
    assert "k8s.container.restart_count" not in root.attributes
    assert root.status == "ERROR", (case.name, root.attributes)
    assert root.attributes["tracer.failed_layer"] == case.layer, (case.name, root.attributes.get("tracer.diagnosis"))
    assert root.attributes["error.type"] == case.cause, (case.name, root.attributes.get("tracer.diagnosis"))
    assert not other_partial_reasons(root.attributes), root.attributes.get("tracer.partial.reasons")
    diagnosis = root.attributes["tracer.diagnosis"]
    assert isinstance(diagnosis, str) and diagnosis and "\n" not in diagnosis
    span = failing_span(trace, case)
    assert span.status == "ERROR" and span.status_message
    assert span.attributes["error.type"] == case.cause
    assert span.attributes["tracer.diagnosis"] == diagnosis
    return trace


def check_crash_loop(traces: list[Trace], case: FailureCase) -> None:
    """Attempt 0 in the pod's trace, attempt 1 in its own, linked to it."""
    first, *restarts = pod_traces(traces, case.spec.uid)
    assert len(restarts) == case.spec.restarts, [t.root.attributes for t in restarts]
    previous = first
    for attempt, trace in enumerate(restarts, start=1):
        root = trace.root
        assert trace.trace_id != previous.trace_id
        assert root.attributes["k8s.container.restart_count"] == attempt
        assert root.attributes["tracer.trace.kind"] == "container restart"
        assert [(link.trace_id, link.span_id) for link in root.links] == [(previous.trace_id, previous.root.span_id)]
        assert root.attributes["error.type"] == case.cause
        assert trace.root.name == "container start"
        assert not any(s.name == "containerd sandbox" for s in trace.spans)
        # kubelet's image check for this attempt, then the attempt itself
        assert [span_label(s) for s in trace.spans if s.kind == "SERVER"] == [
            "containerd ImageStatus", "containerd CreateContainer", "containerd StartContainer"]
        previous = trace


def write_expected(path: Path, healthy: PodSpec, cases: tuple[FailureCase, ...]) -> None:
    import json
    from dataclasses import asdict

    path.write_text(json.dumps({"healthy": asdict(healthy), "cases": [asdict(c) for c in cases]}, indent=1) + "\n")


def read_expected(path: Path) -> tuple[PodSpec, tuple[FailureCase, ...]]:
    import json

    def spec(fields: dict) -> PodSpec:
        fields = {**fields, "command": tuple(fields["command"]), "args": tuple(fields["args"])}
        return PodSpec(**fields)

    document = json.loads(path.read_text())
    cases = tuple(FailureCase(**{**c, "spec": spec(c["spec"])}) for c in document["cases"])
    return spec(document["healthy"]), cases
