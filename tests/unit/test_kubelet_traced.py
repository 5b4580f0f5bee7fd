"""Pure: a real kubelet v1.28.7 with its tracing on, recorded by the tracer
(tests/fixtures/kubelet-traced.rec, made by make_captures.py --kubelet),
with the spans kubelet exported itself (kubelet-traced.kubelet-spans.json).

Its pods: "healthy" and "segfault" (restartPolicy Never) deleted later,
"crash-loop" restarted by kubelet with its back-off, "secret" with secrets
in its args.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from exporters.jaeger_json import document
from tracer.pipeline.pipeline import Pipeline, replay
from tracer.spans.model import Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDING = FIXTURES / "kubelet-traced.rec"
# the secrets in the "secret" pod's args (tests/fixtures/make_captures.py)
ARGV_CANARIES = ("kt-pw-canary-5d2e91", "kt-token-canary-0c7f44", "kt-url-canary-b83a17")


@cache
def replayed() -> tuple[Pipeline, tuple[Trace, ...]]:
    pipeline = replay(str(RECORDING))
    return pipeline, tuple(pipeline.traces())


def kubelet_spans() -> list[dict]:
    return json.loads((FIXTURES / "kubelet-traced.kubelet-spans.json").read_text())


def test_no_argv_secret_in_the_recording_or_the_traces():
    _, traces = replayed()
    exported = json.dumps(document(list(traces))).encode()
    for data in (RECORDING.read_bytes(), exported):
        for canary in ARGV_CANARIES:
            assert canary.encode() not in data
    # the command line is there, its secrets hidden: in kubelet's
    # CreateContainer (as kubelet expanded it) and in the process's exec
    pipeline, _ = replayed()
    args = [c.field("request", "config", "args") for c in pipeline.cri.calls if c.method == "CreateContainer"]
    assert ["sh", "--password=*****", "--token", "*****", "postgres://app:*****@db/shop"] in args


def pod_traces(name: str) -> list[Trace]:
    """A static pod's traces (kubelet names it <name>-node1), the start first."""
    _, traces = replayed()
    mine = [t for t in traces if t.resource["k8s.pod.name"] == f"{name}-node1"]
    return sorted(mine, key=lambda t: t.root.attributes.get("k8s.container.restart_count", -1))


def start_container_end(trace: Trace) -> int:
    return max(s.end_ns for s in trace.spans if s.kind == "CLIENT" and s.attributes.get("rpc.method") == "StartContainer")


def steps() -> dict[str, dict]:
    return {s["step"]: s for s in json.loads((FIXTURES / "kubelet-traced.expected.json").read_text())}


def test_a_healthy_pod_deleted_later_has_no_error_and_ends_with_its_start():
    """kubelet deleted it 27 s after it started (SIGKILL after the grace
    period: exit 137 of both its processes): not this start's failure."""
    (trace,) = pod_traces("healthy")
    root = trace.root
    assert not [s.name for s in trace.spans if s.status == "ERROR"]
    assert root.end_ns == start_container_end(trace)
    assert (root.end_ns - root.start_ns) / 1e9 < 2
    running = [s for s in trace.spans if s.name.startswith("exec ")]
    assert {s.name for s in running} == {"exec /pause", "exec /bin/sh"}
    for span in running:
        assert span.end_ns == root.end_ns and span.attributes["tracer.process.exited"] is False
        assert "process.exit.code" not in span.attributes
    # kubelet's status polls after the start and its teardown are in no trace
    assert not [s for s in trace.spans if s.kind == "CLIENT" and s.start_ns > root.end_ns]
    assert "tracer.diagnosis" not in root.attributes


def test_the_runtimes_stop_is_never_an_error():
    """The same pod, its trace stretched over its deletion: the exits that
    kubelet's StopContainer and StopPodSandbox caused (runc kill ran first)
    say so, and are not errors."""
    from tracer.spans.build import StartExtent, build_trace

    pipeline, _ = replayed()
    pod = next(p for p in pipeline.pods() if p.name == "healthy-node1")
    processes = pipeline.assembler.table.processes
    last = max(processes[k].last_seen_ns for c in pod.all_containers for k in c.activity.processes)
    trace = build_trace(pod, pipeline.clock, "node1", processes=processes, extent=StartExtent(last, ()))
    stopped = [s for s in trace.spans if s.attributes.get("tracer.process.stopped_by_runtime")]
    assert {s.name for s in stopped} == {"exec /pause", "exec /bin/sh"}
    for span in stopped:
        assert span.attributes["process.exit.code"] == 137 and span.status == "UNSET"
    assert trace.root.status == "UNSET"


def test_a_crash_ends_its_start():
    """The container segfaulted 40 ms after its entrypoint ran; kubelet
    stopped the pod (restartPolicy Never) seconds later."""
    (trace,) = pod_traces("segfault")
    root = trace.root
    crashed = next(s for s in trace.spans if s.name == "exec /bin/sh")
    assert crashed.status == "ERROR" and crashed.attributes["error.type"] == "segfault"
    assert crashed.attributes["process.exit.code"] == 139 and crashed.attributes["tracer.process.exited"] is True
    assert root.end_ns == max(start_container_end(trace), crashed.end_ns)
    pause = next(s for s in trace.spans if s.name == "exec /pause")
    assert pause.status == "UNSET" and pause.attributes["tracer.process.exited"] is False
    assert root.status == "ERROR" and root.attributes["error.type"] == "segfault"


def test_each_attempt_of_a_crash_loop_ends_with_its_crash():
    """kubelet restarted the container after 10 s and 20 s of back-off:
    one trace per attempt, each ending when its container exited."""
    traces = pod_traces("crash-loop")
    assert len(traces) >= 3
    previous = None
    for attempt, trace in enumerate(traces):
        crashed = next(s for s in trace.spans if s.name == "exec /bin/sh")
        assert crashed.attributes["process.exit.code"] == 3, attempt
        assert trace.root.end_ns == crashed.end_ns, attempt
        assert trace.root.attributes["error.type"] == "application_error"
        # the time from StartContainer's return to the crash is the container's
        assert trace.root.attributes["tracer.critical_path.process_ms"] > 150
        assert (trace.root.end_ns - trace.root.start_ns) / 1e9 < 2
        if previous is not None:
            # the attempt before, in the trace it really has (the pod's start joined kubelet's)
            assert [(link.trace_id, link.span_id) for link in trace.root.links] == \
                [(previous.trace_id, previous.root.span_id)]
        previous = trace


def test_an_exec_span_shows_its_own_exec():
    """The entrypoint `sh -c 'sleep 3600' sh --password=…` exec'd sleep
    right away: the exec span shows the shell's argv (redacted), and the
    exec of sleep as an event."""
    (trace,) = pod_traces("secret")
    span = next(s for s in trace.spans if s.name == "exec /bin/sh")
    assert span.attributes["process.executable.path"] == "/bin/sh"
    assert span.attributes["process.command_args"] == [
        "sh", "-c", "sleep 3600", "sh", "--password=*****", "--token", "*****", "postgres://app:*****@db/shop"]
    later = [e for e in span.events if e.name.startswith("exec ")]
    assert [e.attributes["process.command_args"] for e in later] == [["sleep", "3600"]]


def test_the_daemon_exports_the_same_traces():
    """Taken as `tracer daemon` takes them (each once its start went quiet),
    the traces are the ones a replay builds."""
    pipeline = replay(str(RECORDING))
    later = steps()["recording_stopped"]["ktime_ns"] + 5_000_000_000  # the last attempt went quiet
    taken = pipeline.take_finished_traces(later, 2_000_000_000, 300_000_000_000)
    _, built = replayed()
    assert document(taken) == document(sorted(built, key=lambda t: [t.trace_id for t in taken].index(t.trace_id)))


# ---- joining kubelet's own trace ------------------------------------------------

def kubelet_span_of(tracer_span) -> dict | None:
    """kubelet's exported span of the call a CRI span of ours shows."""
    traceparent = tracer_span.attributes.get("tracer.cri.traceparent")
    if not traceparent:
        return None
    _, trace_id, span_id, _ = traceparent.split("-")
    found = [s for s in kubelet_spans() if s["span_id"] == span_id]
    assert len(found) == 1 and found[0]["trace_id"] == trace_id, traceparent
    return found[0]


def test_kubelet_sent_trace_context_and_exported_its_own_spans():
    """kubelet v1.28 with tracing: every CRI call carries its traceparent and
    is a span of kubelet's own (otelgrpc).  Each call of a pod start is the
    root of a trace of its own (its teardown's calls sit under
    syncTerminatingPod and the garbage collection)."""
    pipeline, traces = replayed()
    spans = kubelet_spans()
    by_id = {s["span_id"]: s for s in spans}
    cri = [s for s in spans if s["scope"].endswith("/otelgrpc")]
    assert len(cri) > 300 and all(s["kind"] == "SPAN_KIND_CLIENT" and s["service"] == "kubelet" for s in cri)
    # the calls kept (the polls are only counted: 576 views of them here)
    seen = [c for c in pipeline.cri.calls if c.client is not None and c.client.traceparent]
    assert len(seen) == len([c for c in pipeline.cri.calls if c.client is not None]) > 90
    assert {c.client.traceparent.split("-")[2] for c in seen} <= set(by_id)
    assert pipeline.cri.stats.polling_call_views > 500
    starts = [kubelet_span_of(s) for t in traces for s in t.spans if s.attributes.get("tracer.cri.traceparent")]
    assert len(starts) > 40 and all(s["parent_id"] not in by_id for s in starts)
    assert {by_id[s["parent_id"]]["name"] for s in cri if s["parent_id"] in by_id} <= {
        "syncTerminatingPod", "Containers/GarbageCollect", "Images/GarbageCollect"}


def test_the_pod_trace_joins_kubelets_and_copies_none_of_its_spans():
    """RunPodSandbox's span is kubelet's, in the pod's trace: the root and
    containerd's SERVER span hang under it, and there is no CLIENT copy.
    Every other call's kubelet span is in a trace of its own: the pod's
    trace keeps its CLIENT span of the call, linked to kubelet's."""
    _, traces = replayed()
    for trace in (t for t in traces if t.root.name == "pod start"):
        ids = {s.span_id for s in trace.spans}
        run = next(s for s in trace.spans if s.attributes.get("rpc.method") == "RunPodSandbox")
        kubelets = kubelet_span_of(run)
        assert run.kind == "SERVER" and run.parent_id == kubelets["span_id"] == trace.root.parent_id
        assert kubelets["trace_id"] == trace.trace_id and kubelets["name"] == run.name
        assert not [s for s in trace.spans if s.kind == "CLIENT" and s.attributes["rpc.method"] == "RunPodSandbox"]
        assert trace.root.attributes["tracer.kubelet.trace_joined"] is True
        for client in (s for s in trace.spans if s.kind == "CLIENT"):
            theirs = kubelet_span_of(client)
            assert theirs["trace_id"] != trace.trace_id
            assert [(link.trace_id, link.span_id) for link in client.links] == [(theirs["trace_id"],
                                                                                 theirs["span_id"])]
            assert client.name == theirs["name"]  # named as kubelet's own instrumentation names it
        # one trace: every span's parent is in it, or is kubelet's span of RunPodSandbox
        assert all(s.trace_id == trace.trace_id for s in trace.spans)
        assert all(s.parent_id in ids or s.parent_id == kubelets["span_id"] for s in trace.spans[1:])


def test_container_restarts_keep_their_own_trace_and_link_kubelets_spans():
    for trace in (t for t in replayed()[1] if t.root.name == "container start"):
        assert "tracer.kubelet.trace_joined" not in trace.root.attributes
        clients = [s for s in trace.spans if s.kind == "CLIENT"]
        assert [s.attributes["rpc.method"] for s in clients][:3] == ["ImageStatus", "CreateContainer",
                                                                       "StartContainer"]
        for client in clients:
            theirs = kubelet_span_of(client)
            assert [(link.trace_id, link.span_id) for link in client.links] == [(theirs["trace_id"],
                                                                                 theirs["span_id"])]
