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
    mine = [t for t in traces if t.root.attributes["k8s.pod.name"] == f"{name}-node1"]
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
    for attempt, trace in enumerate(traces):
        crashed = next(s for s in trace.spans if s.name == "exec /bin/sh")
        assert crashed.attributes["process.exit.code"] == 3, attempt
        assert trace.root.end_ns == crashed.end_ns, attempt
        assert trace.root.attributes["error.type"] == "application_error"
        # the time from StartContainer's return to the crash is the container's
        assert trace.root.attributes["tracer.critical_path.process_ms"] > 150
        assert (trace.root.end_ns - trace.root.start_ns) / 1e9 < 2


def test_an_exec_span_shows_its_own_exec():
    """The entrypoint `sh -c 'sleep 3600' sh --password=…` exec'd sleep
    right away: the exec span shows the shell's argv (redacted), and the
    exec of sleep as an event."""
    (trace,) = pod_traces("secret")
    span = next(s for s in trace.spans if s.name == "exec /bin/sh")
    assert span.attributes["process.executable.path"] == "/bin/sh"
    assert span.attributes["process.command_line"] == (
        "sh -c sleep 3600 sh --password=***** --token ***** postgres://app:*****@db/shop")
    later = [e for e in span.events if e.name.startswith("exec ")]
    assert [e.attributes["process.command_line"] for e in later] == ["sleep 3600"]


def test_the_daemon_exports_the_same_traces():
    """Taken as `tracer daemon` takes them (each once its start went quiet),
    the traces are the ones a replay builds."""
    pipeline = replay(str(RECORDING))
    later = steps()["recording_stopped"]["ktime_ns"] + 5_000_000_000  # the last attempt went quiet
    taken = pipeline.take_finished_traces(later, 2_000_000_000, 300_000_000_000)
    _, built = replayed()
    assert document(taken) == document(sorted(built, key=lambda t: [t.trace_id for t in taken].index(t.trace_id)))
