"""Pure: a start ends when it ends (tracer.spans.build.start_extent), on the
committed recordings and on real starts whose timing is moved the way a
loaded node moves it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tracer.pipeline.pipeline import replay
from tracer.spans.build import build_trace, start_extent

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCENARIOS = sorted(p.name.removesuffix(".rec") for p in FIXTURES.glob("*.rec"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_nothing_goes_past_the_start(name):
    for trace in replay(str(FIXTURES / f"{name}.rec")).traces():
        root = trace.root
        for span in trace.spans:
            assert root.start_ns <= span.start_ns and span.end_ns <= root.end_ns, (trace.name, span.name)
            if span.attributes.get("tracer.process.exited") is False:
                # still running when the start ended: to the end, without an exit
                assert span.end_ns == root.end_ns and "process.exit.code" not in span.attributes
            assert span.status != "ERROR" or "exited with 137" not in span.status_message or \
                span.attributes.get("error.type") in ("oom_killed", "killed"), (trace.name, span.name)


def _one_pod():
    pipeline = replay(str(FIXTURES / "one-pod.rec"))
    (pod,) = pipeline.pods()
    return pipeline, pod


def test_without_cri_data_the_start_ends_with_the_runtimes_last_step():
    """runc start exits after the entrypoint's exec: it is still the start."""
    pipeline, pod = _one_pod()
    trace = build_trace(pod, pipeline.clock, "n", [], pipeline.assembler.table.processes)
    starts = [s for s in trace.spans if s.name == "runc start"]
    assert all(s.attributes["process.exit.code"] == 0 for s in starts)
    assert trace.root.end_ns == max(s.end_ns for s in trace.spans if s.name != "pod start")
    app = next(s for s in trace.spans if s.name == "runc start" and s.attributes["container.id"] in
               {c.container_id for c in pod.containers})
    assert trace.root.end_ns == app.end_ns  # the app container's runc start, after its entrypoint's exec


def test_an_answer_before_the_entrypoint_ran_does_not_end_the_start():
    """On a loaded node containerd can answer StartContainer before runc
    start exits and the entrypoint runs: the start ends with them."""
    pipeline, pod = _one_pod()
    call = next(c for c in pipeline.cri.calls if c.method == "StartContainer")
    runc_start = pod.containers[0].runc_start
    early = runc_start.start_ns + 1000
    for side in ("client", "server"):
        view = getattr(call, side)
        setattr(call, side, dataclasses.replace(view, response_end_ns=early, end_ns=early))
    extent = start_extent(pod, list(pipeline.cri.calls), pipeline.assembler.table.processes)
    assert extent.end_ktime >= runc_start.exit_ns
    (trace,) = pipeline.traces()
    start = next(s for s in trace.spans if s.name == "runc start" and s.attributes["container.id"] ==
                 pod.containers[0].container_id)
    assert start.attributes["process.exit.code"] == 0 and start.end_ns <= trace.root.end_ns
    group = next(s for s in trace.spans if s.name == "containerd container")
    assert group.end_ns <= trace.root.end_ns
