"""End to end: pod starts that fail, each diagnosed at the layer where it broke.

Real BPF, the real containerd/runc test bed, and a separate "kubelet"
process that starts the pods (tests/failure_cases.py lists the cases).
"""

from __future__ import annotations

import os

import pytest
from bed_recording import start_recorder
from failure_cases import (
    CASES,
    HEALTHY,
    check_crash_loop,
    check_failure,
    pod_traces,
    remove_outcomes,
    run_cases,
)
from tracecheck import late_attach_starts, one
from tracer_testbed.pods import PodStartError, StartedPod

from exporters.jaeger_json import document
from tracer.pipeline.pipeline import replay

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs and runs pods: needs root")]


@pytest.fixture(scope="module")
def recorded(testbed, tmp_path_factory):
    raw = tmp_path_factory.mktemp("failures") / "failures.rec"
    recorder = start_recorder(testbed, raw)
    outcomes = []
    try:
        outcomes = run_cases(testbed, HEALTHY, CASES)
    finally:
        traces = recorder.stop()
    yield traces, outcomes, raw, recorder
    remove_outcomes(testbed, outcomes)


def _outcome(outcomes, name):
    return next(o for o in outcomes if o.spec.name == name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_failure_is_diagnosed_at_its_layer(recorded, case):
    traces, outcomes, _, _ = recorded
    trace = check_failure(traces, case)
    outcome = _outcome(outcomes, case.name)
    # the kubelet role saw the same failure, or a start that "worked"
    # but whose container then broke
    if case.layer in ("container",) or case.cause == "exec_format_error":
        assert isinstance(outcome, StartedPod), outcome
    else:
        assert isinstance(outcome, PodStartError), case.name
    if isinstance(outcome, StartedPod):
        ids = {outcome.sandbox_id, outcome.container_id}
        for span in trace.spans:
            assert span.attributes.get("container.id", outcome.sandbox_id) in ids, span.name


def test_a_late_attach_is_at_most_one_isolated_start(recorded):
    """The cases accept a start marked partial by a late attach
    (tests/tracecheck.py); more than one in a scenario is no stall but a
    fault of the arming."""
    traces, _, _, _ = recorded
    assert len(late_attach_starts(traces)) <= 1, late_attach_starts(traces)


def test_healthy_pod_beside_the_failures_is_fine(recorded):
    traces, outcomes, _, recorder = recorded
    assert recorder.pipeline.stats.lost == 0
    (trace,) = pod_traces(traces, HEALTHY.uid)
    assert trace.root.status != "ERROR"
    assert "tracer.diagnosis" not in trace.root.attributes
    assert not any(s.status == "ERROR" for s in trace.spans)
    pod = _outcome(outcomes, HEALTHY.name)
    group = next(s for s in trace.spans if s.name == "containerd container"
                 and s.attributes["container.id"] == pod.container_id)
    # what the start cost in the container's cgroup (this node has v1 memory, PSI in v2)
    assert group.attributes["tracer.start.memory_peak_bytes"] > 0


def test_oom_kill_is_the_kernels(recorded):
    traces, *_ = recorded
    case = next(c for c in CASES if c.cause == "oom_killed")
    trace = pod_traces(traces, case.spec.uid)[0]
    process = one(trace, "exec /bin/sh")
    assert process.attributes["process.exit.code"] == 137
    assert any(e.name == "oom kill" for e in process.events)
    group = next(s for s in trace.spans if s.name == "containerd container")
    assert group.attributes["tracer.resources.memory_limit_bytes"] == case.spec.memory_limit_bytes


def test_segfault_names_the_crashed_process(recorded):
    traces, *_ = recorded
    case = next(c for c in CASES if c.cause == "segfault")
    trace = pod_traces(traces, case.spec.uid)[0]
    assert one(trace, "exec /bin/sh").attributes["process.exit.code"] == 139
    assert "killed by SIGSEGV" in trace.root.attributes["tracer.diagnosis"]


def test_crash_loop_attempts_are_linked(recorded):
    traces, *_ = recorded
    check_crash_loop(traces, next(c for c in CASES if c.spec.restarts))


def test_cni_failure_names_the_pod_from_cni_args(recorded):
    traces, *_ = recorded
    case = next(c for c in CASES if c.broken_network)
    trace = pod_traces(traces, case.spec.uid)[0]
    # RunPodSandbox failed: no bundle, the pod's identity came from CNI_ARGS
    assert trace.resource["k8s.pod.name"] == case.name
    run = next(s for s in trace.spans if s.kind == "SERVER" and s.attributes["rpc.method"] == "RunPodSandbox")
    assert run.status == "ERROR"  # containerd's UNKNOWN: a server error
    assert "invalid CIDR" in trace.root.attributes["tracer.diagnosis"]


def test_replay_gives_the_same_diagnoses(recorded):
    traces, _, raw, _ = recorded
    assert document(replay(str(raw)).traces()) == document(traces)
