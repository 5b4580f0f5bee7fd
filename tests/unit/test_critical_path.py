"""Pure: the critical path of real pod starts (committed captures) and of
small hand-made traces whose answer can be worked out on paper."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import pytest

from exporters.status import span_label
from tracer.pipeline.pipeline import replay
from tracer.spans.critical_path import (
    ATTRIBUTE_DOMINANT,
    ATTRIBUTE_SUMMARY,
    LAYERS,
    critical_path,
    critical_path_attributes,
    layer_attribute,
    span_layers,
)
from tracer.spans.model import Span, Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCENARIOS = sorted(p.name.removesuffix(".rec") for p in FIXTURES.glob("*.rec"))
MS = 1_000_000


def fixture_traces(name: str) -> list[Trace]:
    return replay(str(FIXTURES / f"{name}.rec")).traces()


@pytest.mark.parametrize("name", SCENARIOS)
def test_segments_are_contiguous_and_cover_the_root_exactly(name):
    for trace in fixture_traces(name):
        path = critical_path(trace)
        root = trace.root
        segments = path.segments
        assert segments[0].start_ns == root.start_ns and segments[-1].end_ns == root.end_ns
        assert all(a.end_ns == b.start_ns for a, b in zip(segments, segments[1:]))
        assert all(s.duration_ns > 0 for s in segments)
        assert sum(s.duration_ns for s in segments) == path.total_ns == root.end_ns - root.start_ns
        assert sum(path.layer_ns().values()) == path.total_ns
        # a span is on the path only while it runs
        assert all(s.span.start_ns <= s.start_ns and s.end_ns <= s.span.end_ns for s in segments)
        layer_ns = path.layer_ns()
        assert layer_ns[path.dominant_layer] == max(layer_ns.values())


def _layer_runs(trace: Trace) -> list[str]:
    """The layers along the critical path, repeats merged."""
    return [layer for layer, _ in groupby(s.layer for s in critical_path(trace).segments)]


def test_one_pod_start_goes_through_every_step_in_order():
    # Read off the waterfall in docs/span-model.md ("A real trace").
    trace = fixture_traces("one-pod")[0]
    sandbox = ["containerd", "cni", "containerd", "shim", "containerd", "runc_create", "runc_init", "containerd",
               "runc_start", "containerd"]
    container = ["containerd", "shim", "containerd", "runc_create", "runc_init", "containerd", "runc_start",
                 "containerd"]
    assert _layer_runs(trace) == (["kubelet"] + sandbox
                                  + ["kubelet", "containerd", "kubelet", "containerd", "kubelet"]  # status, create
                                  + container + ["kubelet"])
    names = [s.span.name for s in critical_path(trace).segments]
    # concurrent CNI plugins hand over to each other; host-local runs inside bridge
    assert names[2:6] == ["cni loopback ADD", "cni bridge ADD", "cni host-local ADD", "cni bridge ADD"]
    # stage 2 waits for runc start after runc create has exited: cut at runc create's end
    init = next(s for s in critical_path(trace).segments if s.span.name == "runc:[2:INIT]")
    create = next(s for s in trace.spans if s.name == "runc create"
                  and s.attributes["container.id"].startswith("39f121235273"))
    assert init.end_ns == create.end_ns


def test_host_network_pod_has_no_cni_time():
    trace = fixture_traces("host-network-pod")[0]
    assert critical_path(trace).layer_ns()["cni"] == 0
    assert "cni" not in critical_path(trace).summary()


def test_attributes_of_a_real_pod_start():
    trace = fixture_traces("one-pod")[0]
    attributes = critical_path_attributes(trace)
    assert set(attributes) == {ATTRIBUTE_SUMMARY, ATTRIBUTE_DOMINANT} | {layer_attribute(layer) for layer in LAYERS}
    total_ms = (trace.root.end_ns - trace.root.start_ns) / MS
    assert sum(attributes[layer_attribute(layer)] for layer in LAYERS) == pytest.approx(total_ms, abs=0.01)
    dominant = attributes[ATTRIBUTE_DOMINANT]
    assert attributes[layer_attribute(dominant)] == max(attributes[layer_attribute(layer)] for layer in LAYERS)
    # "runc init 41% (58.6 ms) › containerd 27% (38.4 ms) › …", largest first
    parts = attributes[ATTRIBUTE_SUMMARY].split(" › ")
    assert parts[0] == f"runc init {round(100 * 58.632 / total_ms)}% (58.6 ms)"
    assert dominant == "runc_init" and attributes[layer_attribute("runc_init")] == 58.632
    shares = [int(part.split("% ")[0].rsplit(" ", 1)[1]) for part in parts]
    assert shares == sorted(shares, reverse=True) and 98 <= sum(shares) <= 102


def test_every_span_of_a_real_trace_has_a_layer():
    trace = fixture_traces("one-pod")[0]
    layers = span_layers(trace)
    assert set(layers) == {s.span_id for s in trace.spans}
    by_label = {span_label(s): layers[s.span_id] for s in trace.spans}
    assert by_label["pod start"] == "kubelet"
    assert by_label["kubelet StartContainer"] == "kubelet"
    assert by_label["containerd StartContainer"] == "containerd"
    assert by_label["containerd container"] == "containerd"
    assert by_label["cni host-local ADD"] == "cni"
    assert by_label["shim daemon"] == "shim"
    assert by_label["runc init"] == by_label["runc:[1:CHILD]"] == "runc_init"
    assert by_label["runc create"] == "runc_create" and by_label["runc start"] == "runc_start"
    assert by_label["exec /bin/sleep"] == "process"


# ---- hand-made traces: times in ms from 0 -------------------------------------

def _trace(*spans: tuple) -> Trace:
    """Spans as (id, parent id, name, service, start ms, end ms[, kind])."""
    return Trace("t", "pod a/b", [Span("t", span_id, parent, name, service, start * MS, end * MS,
                                       kind=kind[0] if kind else "INTERNAL")
                                  for span_id, parent, name, service, start, end, *kind in spans], {})


def _path(trace: Trace) -> list[tuple[str, int, int]]:
    return [(s.span.span_id, s.start_ns // MS, s.end_ns // MS) for s in critical_path(trace).segments]


def test_gaps_between_children_are_the_parents_own_time():
    trace = _trace(("r", None, "pod a/b", "tracer", 0, 100),
                   ("g", "r", "containerd sandbox", "containerd", 0, 100),
                   ("c", "g", "runc create", "runc", 10, 40),
                   ("s", "g", "runc start", "runc", 60, 70))
    assert _path(trace) == [("g", 0, 10), ("c", 10, 40), ("g", 40, 60), ("s", 60, 70), ("g", 70, 100)]
    assert critical_path(trace).layer_ns() == {**dict.fromkeys(LAYERS, 0), "containerd": 60 * MS,
                                               "runc_create": 30 * MS, "runc_start": 10 * MS}


def test_cri_pair_splits_into_the_clients_and_the_servers_time():
    trace = _trace(("r", None, "pod a/b", "kubelet", 0, 50),
                   ("k", "r", "kubelet RunPodSandbox", "kubelet", 0, 20, "CLIENT"),
                   ("c", "k", "containerd RunPodSandbox", "containerd", 2, 19, "SERVER"),
                   ("k2", "r", "kubelet StartContainer", "kubelet", 30, 50, "CLIENT"),
                   ("c2", "k2", "containerd StartContainer", "containerd", 31, 50, "SERVER"))
    assert _path(trace) == [("k", 0, 2), ("c", 2, 19), ("k", 19, 20), ("r", 20, 30), ("k2", 30, 31),
                            ("c2", 31, 50)]
    layers = critical_path(trace).layer_ns()
    assert layers["kubelet"] == 14 * MS and layers["containerd"] == 36 * MS


def test_the_last_finishing_of_concurrent_children_takes_over():
    trace = _trace(("r", None, "pod a/b", "tracer", 0, 30),
                   ("g", "r", "containerd sandbox", "containerd", 0, 30),
                   ("lo", "g", "cni loopback ADD", "cni", 0, 20),
                   ("br", "g", "cni bridge ADD", "cni", 5, 25),
                   ("short", "g", "cni other ADD", "cni", 10, 15))
    # br ends last; lo was still running when br started, so it covers the rest
    assert _path(trace) == [("lo", 0, 5), ("br", 5, 25), ("g", 25, 30)]


def test_a_child_that_outlives_its_parent_counts_only_within_it():
    trace = _trace(("r", None, "pod a/b", "tracer", 0, 40),
                   ("g", "r", "containerd container", "containerd", 0, 40),
                   ("c", "g", "runc create", "runc", 0, 20),
                   ("i", "c", "runc init", "runc", 10, 35))
    assert _path(trace) == [("c", 0, 10), ("i", 10, 20), ("g", 20, 40)]


def test_zero_length_children_are_not_on_the_path():
    trace = _trace(("r", None, "pod a/b", "tracer", 0, 10),
                   ("g", "r", "containerd sandbox", "containerd", 0, 10),
                   ("e", "g", "exec /pause", "container", 10, 10))
    assert _path(trace) == [("g", 0, 10)]


def test_a_span_of_no_known_layer_counts_for_its_parents():
    trace = _trace(("r", None, "pod a/b", "tracer", 0, 10),
                   ("g", "r", "containerd sandbox", "containerd", 0, 10),
                   ("x", "g", "snapshot prepare", "snapshotter", 2, 8))
    assert span_layers(trace)["x"] == "containerd"
    assert critical_path(trace).layer_ns()["containerd"] == 10 * MS


def test_a_root_without_duration_gets_no_attributes():
    trace = _trace(("r", None, "pod a/b", "tracer", 5, 5))
    assert critical_path(trace).segments == ()
    assert critical_path_attributes(trace) == {}


def test_summary_lists_only_layers_that_took_time():
    trace = _trace(("r", None, "pod a/b", "tracer", 0, 40),
                   ("g", "r", "containerd sandbox", "containerd", 0, 40),
                   ("c", "g", "runc create", "runc", 10, 40))
    assert critical_path(trace).summary() == "runc create 75% (30.0 ms) › containerd 25% (10.0 ms)"
    assert critical_path_attributes(trace)[layer_attribute("cni")] == 0.0


def test_a_running_container_is_never_on_the_path():
    """The start does not wait on its containers running: runc start was
    still to exit when the entrypoint had begun (the span still runs at the
    start's end)."""
    trace = _trace(("r", None, "pod a/b", "tracer", 0, 50),
                   ("g", "r", "containerd sandbox", "containerd", 0, 30),
                   ("s", "g", "runc start", "runc", 10, 30),
                   ("e", "g", "exec /pause", "container", 20, 50))
    trace.spans[-1].attributes["tracer.process.exited"] = False
    assert _path(trace) == [("g", 0, 10), ("s", 10, 30), ("r", 30, 50)]


def test_a_crash_after_startcontainer_returned_is_the_containers_time():
    """kubelet's StartContainer returned at 30, the container ran until it
    crashed at 80 (kubelet polled its status meanwhile): that is the
    container's time, not kubelet's."""
    trace = _trace(("r", None, "pod a/b", "kubelet", 0, 80),
                   ("k", "r", "runtime.v1.RuntimeService/StartContainer", "kubelet", 0, 30, "CLIENT"),
                   ("c", "k", "runtime.v1.RuntimeService/StartContainer", "containerd", 1, 29, "SERVER"),
                   ("g", "c", "containerd container", "containerd", 2, 25),
                   ("e", "g", "exec /bin/sh", "container", 25, 80),
                   ("p", "r", "runtime.v1.RuntimeService/ContainerStatus", "kubelet", 50, 51, "CLIENT"))
    trace.spans[4].attributes["tracer.process.exited"] = True
    assert _path(trace) == [("k", 0, 1), ("c", 1, 2), ("g", 2, 25), ("c", 25, 29), ("k", 29, 30),
                            ("e", 30, 50), ("p", 50, 51), ("e", 51, 80)]
    assert critical_path(trace).layer_ns()["process"] == 49 * MS


def test_a_server_span_under_kubelets_own_span_counts_as_the_roots_child():
    """When kubelet's span of a call is in the pod's trace, the runtime's
    SERVER span hangs under it, and kubelet exports that span itself."""
    trace = _trace(("r", "kubelets-span", "pod start", "kubelet", 0, 20),
                   ("c", "kubelets-span", "runtime.v1.RuntimeService/RunPodSandbox", "containerd", 0, 15, "SERVER"),
                   ("g", "c", "containerd sandbox", "containerd", 2, 14))
    assert span_layers(trace) == {"r": "kubelet", "c": "containerd", "g": "containerd"}
    assert _path(trace) == [("c", 0, 2), ("g", 2, 14), ("c", 14, 15), ("r", 15, 20)]
