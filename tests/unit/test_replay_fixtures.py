"""Pure: committed real recordings replay to the golden traces, and those
traces hold up against the pods that really started.

Recordings and expectations are made by tests/fixtures/make_captures.py.
"""

import json
from pathlib import Path

import pytest
from tracecheck import ExpectedPod, check_cri_calls, check_pod_trace, trace_for

from exporters.jaeger_json import document
from tracer.pipeline.pipeline import replay

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCENARIOS = sorted(p.name.removesuffix(".rec") for p in FIXTURES.glob("*.rec"))
# these have expectations of their own (tests/unit/test_diagnosis.py, test_kubelet_traced.py,
# test_reuse_fixture.py, test_tracer_restart_fixture.py)
OWN_EXPECTATIONS = {"failed-starts", "reuse", "tracer-restart", "grpcgo-wire", "kubelet-wire", "kubelet-traced"}
STARTED_POD_SCENARIOS = [name for name in SCENARIOS if name not in OWN_EXPECTATIONS]


def expected(name: str) -> list[ExpectedPod]:
    return [ExpectedPod(**pod) for pod in json.loads((FIXTURES / f"{name}.expected.json").read_text())]


def test_there_are_fixtures():
    assert {"one-pod", "ten-pods", "host-network-pod", "exiting-pod"} <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_matches_golden(name):
    traces = replay(str(FIXTURES / f"{name}.rec")).traces()
    golden = json.loads((FIXTURES / f"{name}.golden.json").read_text())
    assert document(traces) == golden


@pytest.mark.parametrize("name", STARTED_POD_SCENARIOS)
def test_replayed_traces_match_the_started_pods(name):
    pipeline = replay(str(FIXTURES / f"{name}.rec"))
    traces = pipeline.traces()
    pods = expected(name)
    assert pipeline.stats.decode_errors == 0 and pipeline.stats.lost == 0
    assert len(traces) == len(pods)
    all_ids = {cid for p in pods for cid in (p.sandbox_id, p.container_id)}
    for pod in pods:
        trace = trace_for(traces, pod.uid)
        check_pod_trace(trace, pod, all_ids)
        check_cri_calls(trace, pod)


def test_replay_is_deterministic():
    first = document(replay(str(FIXTURES / "ten-pods.rec")).traces())
    assert document(replay(str(FIXTURES / "ten-pods.rec")).traces()) == first


def test_truncated_recording_replays_with_partial_traces(tmp_path):
    data = (FIXTURES / "one-pod.rec").read_bytes()
    cut = tmp_path / "cut.rec"
    cut.write_bytes(data[: len(data) - 1000])
    pipeline = replay(str(cut))
    assert pipeline.stats.truncated_recording
    for trace in pipeline.traces():
        assert trace.root.attributes["tracer.partial"] is True
        assert "truncated" in trace.root.attributes["tracer.partial.reasons"]


def test_take_finished_hands_out_each_pod_once_after_the_quiet_period():
    pipeline = replay(str(FIXTURES / "ten-pods.rec"))
    first, last = pipeline.assembler.start_window(list(pipeline.assembler.containers.values()))
    quiet, max_age = 2_000_000_000, 300_000_000_000
    assert pipeline.take_finished_traces(first + 1, quiet, max_age) == []
    finished = pipeline.take_finished_traces(last + quiet, quiet, max_age)
    assert len(finished) == 10
    assert all("tracer.partial" not in t.root.attributes for t in finished)
    assert pipeline.take_finished_traces(last + 10 * quiet, quiet, max_age) == []
    golden = json.loads((FIXTURES / "ten-pods.golden.json").read_text())
    assert {t.trace_id for t in finished} == {t["traceID"] for t in golden["data"]}


def test_prune_after_export_keeps_the_tables_flat():
    pipeline = replay(str(FIXTURES / "ten-pods.rec"))
    assembler = pipeline.assembler
    _, last = assembler.start_window(list(assembler.containers.values()))
    processes_before = len(assembler.table.processes)
    pipeline.take_finished_traces(last + 2_000_000_000, 2_000_000_000, 300_000_000_000)
    assembler.prune(last + 10**12)  # long after: every exited process of an exported pod goes
    remaining = assembler.table.processes.values()
    assert len(assembler.table.processes) < processes_before
    assert all(p.exit_ns is None for p in remaining)
    assert set(assembler.owner) <= set(assembler.table.processes)


def test_a_pod_is_handed_out_once_however_its_steps_are_forgotten():
    """Pruning forgets a start's steps as they age: the sandbox's (which
    end first) before its container's.  Half forgotten, a pod start is
    still the one that was handed out, never a new one."""
    pipeline = replay(str(FIXTURES / "ten-pods.rec"))
    assembler = pipeline.assembler
    _, last = assembler.start_window(list(assembler.containers.values()))
    quiet, max_age = 2_000_000_000, 300_000_000_000
    assert len(pipeline.take_finished_traces(last + quiet, quiet, max_age)) == 10
    # just before the first app container's runtime steps began: only
    # sandbox steps that ended by then are forgotten
    apps = [a for a in assembler.containers.values() if not a.is_sandbox]
    cut = min(assembler.start_window([a])[0] for a in apps)
    forgotten = [k for k, p in assembler.table.processes.items() if p.exit_ns is not None and p.exit_ns < cut]
    assert forgotten
    assembler.prune(cut)
    assert all(k not in assembler.table.processes for k in forgotten)
    assert pipeline.take_finished_traces(last + 10 * quiet, quiet, max_age) == []


def test_pod_trace_joins_kubelets_trace_when_it_sends_traceparent():
    pipeline = replay(str(FIXTURES / "one-pod.rec"))
    run = next(c for c in pipeline.cri.calls if c.method == "RunPodSandbox")
    run.client.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    trace = pipeline.traces()[0]
    assert trace.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert all(s.trace_id == trace.trace_id for s in trace.spans)
    assert trace.root.parent_id == "b7ad6b7169203331"
    assert trace.root.attributes["tracer.kubelet.trace_joined"] is True
    # kubelet's span of the call is in the trace: no copy of it, containerd's span under it
    runs = [s for s in trace.spans if s.attributes.get("rpc.method") == "RunPodSandbox"]
    assert [(s.kind, s.parent_id) for s in runs] == [("SERVER", "b7ad6b7169203331")]
    # a call whose kubelet span is in another trace keeps its CLIENT span, linked to kubelet's
    start = next(c for c in pipeline.cri.calls if c.method == "StartContainer")
    start.client.traceparent = "00-1bf7651916cd43dd8448eb211c80319d-c7ad6b7169203332-01"
    trace = pipeline.traces()[0]
    client = next(s for s in trace.spans if s.kind == "CLIENT" and s.attributes["rpc.method"] == "StartContainer")
    assert [(link.trace_id, link.span_id) for link in client.links] == [("1bf7651916cd43dd8448eb211c80319d",
                                                                        "c7ad6b7169203332")]
    assert trace.trace_id == "0af7651916cd43dd8448eb211c80319c"
    # an all-zero (invalid) context is ignored
    run.client.traceparent = "00-" + "0" * 32 + "-b7ad6b7169203331-01"
    assert pipeline.traces()[0].trace_id != "0" * 32


def test_daemon_forgets_old_cri_calls():
    pipeline = replay(str(FIXTURES / "one-pod.rec"))
    assert pipeline.cri.calls
    last = max(c.start_ns for c in pipeline.cri.calls)
    pipeline.cri.prune(last + 1)
    assert pipeline.cri.calls == [] and pipeline.cri._pairs == {}
